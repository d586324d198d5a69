"""Heads of keras-hub blocks that derive their head size from hidden_dim / num_heads (Bert,
DistilBert, Roberta, GPT2, Llama, ViT): rebuilt as prunec's head-sized blocks
(``compiler.hub_blocks``), checked against zeroed copies built without prunec code.

The law: removing head ``h`` computes what the original computes with ``h``'s value projection
(kernel and bias) zeroed, and -- the second route -- with the output-projection rows that read
``h`` zeroed. Every model is built from config at a tiny size (nothing is downloaded).
"""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from clirun import run, run_fresh
from compiler.api import apply, format_plan, plan
from compiler.verify import random_inputs
from exactness import refusal, spec_of

keras_hub = pytest.importorskip("keras_hub")
from test_hub import COMMON, GQA, M, ROOT, assert_law, backbone, outputs  # noqa: E402

import compiler.hub_blocks as hub_blocks  # noqa: E402

#: name -> (attention sub-layer, the blocks' (layer, prefix) pairs)
ENCODERS = [(f"transformer_layer_{i}", "") for i in (0, 1)]
HEADS = {
    "bert": ("self_attention_layer", ENCODERS),
    "distilbert": ("self_attention_layer", ENCODERS),
    "roberta": ("self_attention_layer", ENCODERS),
    "gpt2": ("self_attention", ENCODERS),
    "llama_mha": ("self_attention", ENCODERS),
    "vit": ("mha", [("vit_encoder", f"transformer_block_{j}/") for j in (1, 2)]),
}
EXTRA = {
    "llama_mha": lambda: M.LlamaBackbone(num_query_heads=4, num_key_value_heads=4, **COMMON),
    "qwen3": lambda: M.Qwen3Backbone(head_dim=8, **GQA, **COMMON),
}


def model_of(name):
    if name not in EXTRA:
        return backbone(name)
    keras.utils.set_random_seed(0)
    model = EXTRA[name]()
    rng = np.random.default_rng(1)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.3, tuple(variable.shape)).astype(variable.dtype))
    return model


def routes(model, attention, pairs, removed):
    """(value projections zeroed, output rows zeroed): ``block -> weight -> (axis, heads)``."""
    by_value, by_output = {}, {}
    for (block, prefix), heads in zip(pairs, removed):
        paths = {v.path.split(f"{block}/", 1)[1] for v in model.get_layer(block).weights}
        base = f"{prefix}{attention}"
        by_value.setdefault(block, {})[f"{base}/value/kernel"] = (1, heads)
        if f"{base}/value/bias" in paths:
            by_value[block][f"{base}/value/bias"] = (0, heads)
        by_output.setdefault(block, {})[f"{base}/attention_output/kernel"] = (0, heads)
    return by_value, by_output


def head_shapes(model, pairs, attention):
    """(heads, head size) of each block's output projection."""
    found = []
    for block, prefix in pairs:
        (kernel,) = [v for v in model.get_layer(block).weights
                     if v.path.endswith(f"{prefix}{attention}/attention_output/kernel")]
        found.append(tuple(kernel.shape[:2]))
    return found


def heads_rules(attention, pairs, removed):
    return "".join(f"  - layer: '{block}/{prefix}{attention}'\n    unit: heads\n"
                   f"    remove: {list(heads)}\n" for (block, prefix), heads in zip(pairs, removed))


@pytest.mark.parametrize("name", sorted(HEADS))
def test_removed_heads_equal_zeroed_value_projections_and_zeroed_output_rows(name):
    model = model_of(name)
    attention, pairs = HEADS[name]
    removed = [[1, 2]] * len(pairs)
    rebuilt, resolved, difference = apply(spec_of(heads_rules(attention, pairs, removed)), model)
    assert difference is not None and difference < 1e-4
    assert type(rebuilt) is not type(model)
    note = " ".join(resolved.notes)
    assert "functional model of prunec's blocks (Prunec" in note
    assert "import compiler.hub_blocks, then keras.saving.load_model" in note
    assert all(type(rebuilt.get_layer(block)).__module__ == "compiler.hub_blocks"
               for block, _ in pairs)
    assert head_shapes(model, pairs, attention) == [(4, 8)] * len(pairs)
    assert head_shapes(rebuilt, pairs, attention) == [(2, 8)] * len(pairs)    # same head size
    assert_law(model, rebuilt, resolved, *routes(model, attention, pairs, removed))


def test_different_heads_per_block_are_one_functional_model_of_different_head_counts():
    model = model_of("bert")
    attention, pairs = HEADS["bert"]
    removed = [[1], [0, 3]]
    rebuilt, resolved, _ = apply(spec_of(heads_rules(attention, pairs, removed)), model)
    assert [rebuilt.get_layer(block).num_heads for block, _ in pairs] == [3, 2]
    assert head_shapes(rebuilt, pairs, attention) == [(3, 8), (2, 8)]
    assert_law(model, rebuilt, resolved, *routes(model, attention, pairs, removed))


def test_llama_kv_heads_take_their_query_group_and_query_heads_keep_groups_equal():
    model = backbone("llama")                  # 4 query heads, 2 key/value heads
    block = "transformer_layer_0"
    rebuilt, resolved, _ = apply(
        spec_of(f"  - layer: '{block}/self_attention'\n    unit: kv_heads\n    remove: [1]\n"),
        model)
    layer = rebuilt.get_layer(block)
    assert (layer.num_query_heads, layer.num_key_value_heads, layer.head_dim) == (2, 1, 8)
    by_value = {block: {"self_attention/value/kernel": (1, [1])}}
    by_output = {block: {"self_attention/attention_output/kernel": (0, [2, 3])}}
    assert_law(model, rebuilt, resolved, by_value, by_output)

    text = "  - layer: 'transformer_layer_*/self_attention'\n    unit: heads\n    remove: [0, 3]\n"
    rebuilt, resolved, _ = apply(spec_of(text), model)
    assert [rebuilt.get_layer(f"transformer_layer_{i}").num_query_heads for i in (0, 1)] == [2, 2]
    rows = {f"transformer_layer_{i}": {"self_attention/attention_output/kernel": (0, [0, 3])}
            for i in (0, 1)}
    assert_law(model, rebuilt, resolved, rows, rows)


def test_prunec_blocks_with_the_original_head_size_compute_what_keras_hubs_compute():
    """Each prunec class (some repeat a keras-hub build) has the same weights, by path and
    shape, and the same outputs as keras-hub's, when given the head size keras-hub derives."""
    for name in ("bert", "gpt2", "llama", "qwen3", "vit"):
        model = model_of(name)

        def clone(layer):
            prunec = hub_blocks.PRUNEC_BLOCKS.get(type(layer))
            if prunec is None:
                return layer.__class__.from_config(layer.get_config())
            config = hub_blocks.repaired_config(layer)
            output = [v for v in layer.weights if v.path.endswith("attention_output/kernel")]
            if output and "head_dim" not in config:
                config["head_dim"] = int(output[0].shape[1])
            return prunec.from_config(config)

        copy = keras.models.clone_model(model, clone_function=clone)
        assert any(type(layer).__module__ == "compiler.hub_blocks" for layer in copy.layers)
        before = {v.path: tuple(v.shape) for v in model.weights}
        assert {v.path: tuple(v.shape) for v in copy.weights} == before, name
        values = {v.path: v.numpy() for v in model.weights}
        for variable in copy.weights:
            variable.assign(values[variable.path])
        feed = random_inputs(model, batch=2, seed=4)
        np.testing.assert_allclose(outputs(copy, feed), outputs(model, feed), rtol=1e-5,
                                   atol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", ["llama", "vit"])
def test_a_model_of_prunec_blocks_saves_and_loads(tmp_path, name):
    model = model_of(name)
    attention, pairs = HEADS.get(name, ("self_attention", ENCODERS))
    removed = [[0, 3]] * len(pairs)
    rebuilt, _, _ = apply(spec_of(heads_rules(attention, pairs, removed)), model)
    rebuilt.save(tmp_path / "pruned.keras")
    loaded = keras.saving.load_model(tmp_path / "pruned.keras")
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in rebuilt.layers]
    feed = random_inputs(model, batch=2, seed=6)
    np.testing.assert_allclose(outputs(loaded, feed), outputs(rebuilt, feed), rtol=1e-5, atol=1e-5)


def test_different_widths_per_block_of_qwen3_rebuild_as_prunec_blocks_that_load(tmp_path):
    """Qwen3's block config omits head_dim: its functional rebuild uses prunec's class."""
    model = model_of("qwen3")
    text = ("  - layer: 'transformer_layer_0/feedforward_intermediate_dense'\n    remove: [1, 2]\n"
            "  - layer: 'transformer_layer_1/self_attention'\n    unit: kv_heads\n"
            "    remove: [0]\n")
    rebuilt, resolved, difference = apply(spec_of(text), model)
    assert difference is not None and difference < 1e-4
    assert "prunec's blocks (PrunecQwen3TransformerDecoder)" in " ".join(resolved.notes)
    producer = {"transformer_layer_0": {"feedforward_intermediate_dense/kernel": (1, [1, 2])}}
    reader = {"transformer_layer_0": {"feedforward_output_dense/kernel": (0, [1, 2])}}
    for zero in (producer, reader):
        zero["transformer_layer_1"] = {"self_attention/value/kernel": (1, [0])}
    assert_law(model, rebuilt, resolved, producer, reader)
    rebuilt.save(tmp_path / "pruned.keras")
    loaded = keras.saving.load_model(tmp_path / "pruned.keras")
    feed = random_inputs(model, batch=2, seed=2)
    np.testing.assert_allclose(outputs(loaded, feed), outputs(rebuilt, feed), rtol=1e-5, atol=1e-5)


BERT_HEADS = ("  - layer: 'transformer_layer_*/self_attention_layer'\n    unit: heads\n"
              "    remove: [3]\n")


def test_cli_plan_and_apply_heads_of_a_saved_bert_and_a_fresh_process_loads_the_result(
        tmp_path, capsys):
    """The note says what to import; a fresh process that does loads the model (and prunec,
    which imports it itself, plans on it)."""
    model = model_of("bert")
    model.save(tmp_path / "bert.keras")
    (tmp_path / "s.yaml").write_text("version: 1\nprune:\n" + BERT_HEADS)
    code, out, err = run(capsys, "plan", tmp_path / "s.yaml", tmp_path / "bert.keras")
    assert (code, err) == (0, "")
    assert re.search(r"transformer_layer_1/self_attention_layer \(heads\)\s+removes 1( of 4)?\s+3",
                     out)
    assert "note: rebuild: a functional model of prunec's blocks (PrunecTransformerEncoder), " \
           "not a BertBackbone" in out
    code, out, err = run(capsys, "apply", tmp_path / "s.yaml", tmp_path / "bert.keras",
                         "-o", tmp_path / "pruned.keras")
    assert (code, err) == (0, "") and "verified" in out
    feed = random_inputs(model, batch=2, seed=7)
    np.save(tmp_path / "feed.npy", feed, allow_pickle=True)
    pruned = keras.saving.load_model(tmp_path / "pruned.keras")
    np.save(tmp_path / "expected.npy", outputs(pruned, feed))
    script = ("import sys, keras, numpy as np, compiler.hub_blocks; "
              "m = keras.saving.load_model(sys.argv[1]); "
              "feed = np.load(sys.argv[2], allow_pickle=True).item(); "
              "out = m(feed, training=False); "
              "got = np.concatenate([np.ravel(np.asarray(v)) for _, v in sorted(out.items())]); "
              "print(float(np.abs(got - np.load(sys.argv[3])).max()), "
              "m.get_layer('transformer_layer_0').num_heads)")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "pruned.keras"),
                           str(tmp_path / "feed.npy"), str(tmp_path / "expected.npy")],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    worst, heads = done.stdout.split()
    assert float(worst) < 1e-5 and heads == "3"
    (tmp_path / "t.yaml").write_text(
        "version: 1\nprune:\n  - layer: 'transformer_layer_0/self_attention_layer'\n"
        "    unit: heads\n    remove: [0]\n")
    done = run_fresh("plan", tmp_path / "t.yaml", tmp_path / "pruned.keras")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "PrunecTransformerEncoder" in done.stdout


def test_heads_show_in_plans_as_mistrals_do():
    lines, members = [], []
    for name, attention in (("bert", "self_attention_layer"), ("mistral", "self_attention")):
        resolved = plan(backbone(name), spec_of(
            f"  - layer: 'transformer_layer_0/{attention}'\n    unit: heads\n    remove: [0, 3]\n"))
        (group,) = resolved.groups
        members += [tuple(member) for member in group.members]
        line = next(line for line in format_plan(resolved).splitlines() if "(heads)" in line)
        lines.append(line.replace(attention, "ATTENTION"))
    assert members == [("transformer_layer_0/self_attention_layer", (0, 3), "heads"),
                       ("transformer_layer_0/self_attention", (0, 3), "heads")]
    assert lines[0] == lines[1]
    assert re.fullmatch(r"  transformer_layer_0/ATTENTION \(heads\)\s+removes 2( of 4)?\s+0,3",
                        lines[0]), lines[0]


def test_bad_head_input_is_one_line():
    model = backbone("bert")
    text = refusal(model, BERT_HEADS.replace("[3]", "[4]"))
    assert text.endswith("index 4 is out of range for 'transformer_layer_0/self_attention_layer'"
                         " (MultiHeadAttention, 4 heads) (hint: valid range 0..3)")
    text = refusal(model, "  - layer: pooled_dense\n    unit: heads\n    remove: [1]\n")
    assert text.endswith("'pooled_dense' (Dense) has no unit 'heads' (hint: its units: outputs)")


def test_heads_of_a_task_are_refused_at_plan_time_in_one_line_naming_the_layer():
    backbone_model = backbone("bert")
    task = M.BertTextClassifier(backbone_model, num_classes=3, preprocessor=None)
    name = backbone_model.name
    text = refusal(task, BERT_HEADS.replace("'transformer", f"'{name}/transformer"))
    assert text == (
        f"BertTextClassifier: removing heads of '{name}/transformer_layer_0/self_attention_layer'"
        " needs prunec's "
        "head-sized blocks, which a BertBackbone cannot hold (a BertBackbone derives its blocks' "
        "head size from its hidden size), and a task is rebuilt only around a backbone of its "
        "own class (hint: prune the heads of its backbone alone (model.backbone, rebuilt as a "
        "functional model of prunec's blocks), or its FFN neurons)")


class SubclassedEncoder(keras_hub.layers.TransformerEncoder):
    """A subclass prunec has no head-sized version of (it may compute differently)."""


def encoder_model(cls):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6, 32), name="tokens")
    x = cls(intermediate_dim=64, num_heads=4, name="encoder")(tokens)
    return keras.Model(tokens, keras.layers.Dense(5, name="head")(x))


def test_a_keras_hub_block_in_a_plain_model_prunes_heads_and_a_subclass_is_refused():
    model = encoder_model(keras_hub.layers.TransformerEncoder)
    text = "  - layer: encoder/self_attention_layer\n    unit: heads\n    remove: [2]\n"
    rebuilt, resolved, difference = apply(spec_of(text), model)
    assert difference is not None and difference < 1e-4
    assert type(rebuilt.get_layer("encoder")) is hub_blocks.PrunecTransformerEncoder
    assert "note: rebuild: keras-hub layers as prunec's (PrunecTransformerEncoder); to load " \
           "it: import compiler.hub_blocks" in format_plan(resolved)
    assert refusal(encoder_model(SubclassedEncoder), text).startswith(
        "'encoder' (SubclassedEncoder) sizes its heads as hidden width / num_heads (8 = 32 / 4), "
        "so it cannot be rebuilt with fewer heads of the same size")


def test_prunec_plans_its_own_output_of_a_plain_model_in_a_fresh_process(tmp_path):
    """The saved config names 'prunec>PrunecTransformerEncoder' and no keras-hub class: the
    loader must still import prunec's blocks (and keras-hub under them)."""
    model = encoder_model(keras_hub.layers.TransformerEncoder)
    text = "  - layer: encoder/self_attention_layer\n    unit: heads\n    remove: [2]\n"
    apply(spec_of(text), model)[0].save(tmp_path / "pruned.keras")
    (tmp_path / "s.yaml").write_text("version: 1\nprune:\n  - layer: encoder/feedforward_"
                                     "intermediate_dense\n    remove: [1]\n")
    done = run_fresh("plan", tmp_path / "s.yaml", tmp_path / "pruned.keras")
    assert done.returncode == 0, done.stderr
    assert "encoder/feedforward_intermediate_dense  removes 1 of 64  1" in done.stdout


def test_a_block_inside_a_nested_model_gets_the_load_note():
    inner = encoder_model(keras_hub.layers.TransformerEncoder)
    tokens = keras.Input((6, 32), name="outer_tokens")
    model = keras.Model(tokens, keras.layers.Dense(3, name="top")(inner(tokens)))
    text = f"  - layer: {inner.name}/encoder/self_attention_layer\n    unit: heads\n    remove: [1]\n"
    rebuilt, resolved, difference = apply(spec_of(text), model)
    assert difference is not None and difference < 1e-4
    assert type(rebuilt.get_layer(inner.name).get_layer("encoder")) is \
        hub_blocks.PrunecTransformerEncoder
    assert "note: rebuild: keras-hub layers as prunec's (PrunecTransformerEncoder); to load " \
           "it: import compiler.hub_blocks" in format_plan(resolved)
