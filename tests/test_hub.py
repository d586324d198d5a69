"""keras-hub backbones: verification feeds them what they take, and (below) their blocks prune.

Every backbone is built from config at a tiny size with random weights (no preset is downloaded).
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import reference
from clirun import run, run_fresh
from compiler.api import apply, plan
from compiler.errors import ConstraintError, internal_error_text
from compiler.verify import random_inputs
from exactness import spec_of

keras_hub = pytest.importorskip("keras_hub")
ROOT = Path(__file__).resolve().parent.parent


def bert(**overrides):
    keras.utils.set_random_seed(0)
    config = dict(vocabulary_size=50, num_layers=2, num_heads=4, hidden_dim=32,
                  intermediate_dim=64, max_sequence_length=16)
    config.update(overrides)
    return keras_hub.models.BertBackbone(**config)


def test_random_inputs_follow_a_dict_model_and_its_vocabulary():
    feed = random_inputs(bert(), batch=2)
    assert sorted(feed) == ["padding_mask", "segment_ids", "token_ids"]
    assert feed["token_ids"].shape == (2, 16)            # capped by max_sequence_length
    assert feed["token_ids"].max() < 50 and feed["token_ids"].max() > 2
    assert feed["segment_ids"].max() < 2
    assert (feed["padding_mask"] == 1).all()


def test_apply_on_a_bert_backbone_that_prunes_nothing_succeeds(tmp_path, capsys):
    bert().save(tmp_path / "bert.keras")
    (tmp_path / "s.yaml").write_text("version: 1\nprune:\n  - layer: nothing\n    remove: [0]\n"
                                     "    optional: true\n")
    code, out, err = run(capsys, "apply", tmp_path / "s.yaml", tmp_path / "bert.keras",
                         "-o", tmp_path / "out.keras")
    assert (code, err) == (0, "")
    assert "verified" in out


def test_a_fresh_process_imports_keras_hub_for_a_model_file_that_needs_it(tmp_path):
    """prunec imports keras-hub only when a model file names its classes (not on start-up), and
    then registers its block rules: FFN neurons prune from the command line."""
    bert().save(tmp_path / "bert.keras")
    (tmp_path / "s.yaml").write_text("version: 1\nprune:\n  - layer: transformer_layer_0/"
                                     "feedforward_intermediate_dense\n    remove: [0, 5]\n")
    done = run_fresh("plan", tmp_path / "s.yaml", tmp_path / "bert.keras")
    assert done.returncode == 0, done.stderr
    assert "transformer_layer_0/feedforward_intermediate_dense  removes 2 of 64  0,5" in done.stdout
    quiet = subprocess.run([sys.executable, "-c", "import compiler.graph, sys; "
                            "print('keras_hub' in sys.modules)"], capture_output=True, text=True,
                           cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert quiet.stdout.strip() == "False"          # nothing on start-up


def test_error_text_has_no_terminal_colour_codes():
    text = internal_error_text(ValueError("\x1b[1mThe structure\x1b[0m doesn't match"))
    assert "\x1b" not in text and "[1m" not in text and "The structure doesn't match" in text


# -- the law, against zeroed copies built without prunec code --------------------------------------

M = keras_hub.models
COMMON = dict(vocabulary_size=50, num_layers=2, hidden_dim=32, intermediate_dim=64)
GQA = dict(num_query_heads=4, num_key_value_heads=2)
BACKBONES = {
    "bert": lambda: M.BertBackbone(num_heads=4, max_sequence_length=16, **COMMON),
    "distilbert": lambda: M.DistilBertBackbone(num_heads=4, max_sequence_length=16, **COMMON),
    "roberta": lambda: M.RobertaBackbone(num_heads=4, max_sequence_length=16, **COMMON),
    "gpt2": lambda: M.GPT2Backbone(num_heads=4, max_sequence_length=16, **COMMON),
    "llama": lambda: M.LlamaBackbone(**GQA, **COMMON),
    "mistral": lambda: M.MistralBackbone(**GQA, **COMMON),
    "gemma": lambda: M.GemmaBackbone(head_dim=8, **GQA, **COMMON),
    "qwen3_5": lambda: M.Qwen3_5Backbone(head_dim=8, layer_types=["full_attention"] * 2, **GQA,
                                         **COMMON),
    "vit": lambda: M.ViTBackbone(image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=4,
                                 hidden_dim=32, mlp_dim=64),
}
BLOCKS = {"gemma": "decoder_block_{i}", "vit": "vit_encoder"}
FFN = {"gemma": ("ffw_gating", "ffw_linear"), "vit": ("mlp/dense_1", "mlp/dense_2")}
ATTENTION = {"gemma": "attention", "vit": "mha",
             "bert": "self_attention_layer", "distilbert": "self_attention_layer",
             "roberta": "self_attention_layer"}


def backbone(name):
    keras.utils.set_random_seed(0)
    model = BACKBONES[name]()
    rng = np.random.default_rng(1)      # weights big enough that a zeroed channel shows
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.3, tuple(variable.shape)).astype(variable.dtype))
    return model


def blocks(name):
    """(block layer name, sub-layer prefix inside it) of each of the two blocks."""
    if name == "vit":
        return [("vit_encoder", f"transformer_block_{j}/") for j in (1, 2)]
    return [(BLOCKS.get(name, "transformer_layer_{i}").format(i=i), "") for i in (0, 1)]


def zeroed(model, zero):
    """A copy from the backbone's own config, same weights, with ``zero``: ``block -> weight path
    -> (axis, indices)`` set to 0. No prunec code."""
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return reference.zero_weights(copy, zero)


def outputs(model, feed):
    out = model(feed, training=False)
    return np.concatenate([np.ravel(keras.ops.convert_to_numpy(v)) for _, v in sorted(out.items())]) \
        if isinstance(out, dict) else np.ravel(keras.ops.convert_to_numpy(out))


def assert_law(model, rebuilt, resolved, route_a, route_b):
    feed = random_inputs(model, batch=2, seed=3)
    a, b = outputs(zeroed(model, route_a), feed), outputs(zeroed(model, route_b), feed)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(a).max())   # routes agree
    got = outputs(rebuilt, feed)
    np.testing.assert_allclose(got, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    assert np.abs(outputs(model, feed) - a).max() > 1e-3 * np.abs(a).max()     # not a no-op
    assert resolved.params == (model.count_params(), rebuilt.count_params())



@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_removed_ffn_neurons_equal_zeroed_producer_columns_and_zeroed_output_rows(name):
    model = backbone(name)
    first, second = FFN.get(name, ("feedforward_intermediate_dense", "feedforward_output_dense"))
    pairs = blocks(name)
    targets = [f"{block}/{prefix}{first}" for block, prefix in pairs]
    removed = [1, 5, 6]
    text = "".join(f"  - layer: '{target}'\n    remove: {removed}\n" for target in targets)
    rebuilt, resolved, difference = apply(spec_of(text), model)
    assert difference is not None and difference < 1e-4
    assert type(rebuilt) is type(model)                      # uniform widths keep the class
    producer, reader = {}, {}
    for block, prefix in pairs:
        one, two = prefix + first, prefix + second
        producer.setdefault(block, {})[f"{one}/kernel"] = (1, removed)
        if f"{one}/bias" in {v.path[len(block) + 1:] for v in model.get_layer(block).weights}:
            producer[block][f"{one}/bias"] = (0, removed)
        reader.setdefault(block, {})[f"{two}/kernel"] = (0, removed)
    assert_law(model, rebuilt, resolved, producer, reader)


def _value_axis(model, block):
    """Head axis of the value kernel: (hidden, heads, dim) in most, (heads, hidden, dim) in Gemma."""
    return 0 if isinstance(model, M.GemmaBackbone) else 1


@pytest.mark.parametrize("name", ["mistral", "gemma", "qwen3_5"])
def test_removed_kv_heads_take_their_query_group_like_a_zeroed_value_projection(name):
    model = backbone(name)
    attention = ATTENTION.get(name, "self_attention")
    block = blocks(name)[0][0]
    rebuilt, resolved, difference = apply(
        spec_of(f"  - layer: '{block}/{attention}'\n    unit: kv_heads\n    remove: [1]\n"), model)
    assert difference is not None and difference < 1e-4
    assert type(rebuilt) is not type(model)               # blocks differ: a functional model
    assert "functional model of the same block classes" in " ".join(resolved.notes)
    layer = rebuilt.get_layer(block)
    assert (layer.num_query_heads, layer.num_key_value_heads) == (2, 1)
    by_value = {block: {f"{attention}/value/kernel": (_value_axis(model, block), [1])}}
    by_output = {block: {f"{attention}/attention_output/kernel": (0, [2, 3])}}
    assert_law(model, rebuilt, resolved, by_value, by_output)


@pytest.mark.parametrize("name", ["mistral", "qwen3_5"])
def test_query_heads_go_when_every_group_keeps_the_same_size(name):
    model = backbone(name)
    text = "  - layer: 'transformer_layer_*/self_attention'\n    unit: heads\n    remove: [0, 3]\n"
    rebuilt, resolved, difference = apply(spec_of(text), model)
    assert type(rebuilt) is type(model)
    assert rebuilt.get_config()["num_query_heads"] == 2
    rows = {f"transformer_layer_{i}": {"self_attention/attention_output/kernel": (0, [0, 3])}
            for i in (0, 1)}
    assert_law(model, rebuilt, resolved, rows, rows)


def test_query_heads_that_leave_groups_unequal_are_one_line_naming_the_group():
    with pytest.raises(ConstraintError) as caught:
        plan(backbone("mistral"), spec_of("  - layer: 'transformer_layer_0/self_attention'\n"
                                          "    unit: heads\n    remove: [0]\n"))
    assert str(caught.value) == (
        "spec.yaml:3:5: rule 1 (layer 'transformer_layer_0/self_attention', unit heads): removing "
        "these query heads of 'transformer_layer_0/self_attention' leaves key/value group 0 with 1 "
        "of its 2 query heads, other groups with 2 (hint: grouped-query attention needs every "
        "group the same size: remove as many query heads from every group, or use "
        "'unit: kv_heads')")


def test_the_residual_stream_is_approximate_through_the_norms():
    with pytest.raises(ConstraintError) as caught:
        plan(backbone("llama"), spec_of("  - layer: token_embedding\n    remove: [0]\n"))
    assert "cannot remove channel 0 of 'token_embedding'" in str(caught.value)


def test_a_uniform_backbone_saves_and_loads_as_a_preset(tmp_path):
    model = backbone("llama")
    text = "  - layer: 'transformer_layer_*/feedforward_intermediate_dense'\n    fraction: 0.25\n"
    rebuilt, resolved, _ = apply(spec_of(text), model)
    assert type(rebuilt) is M.LlamaBackbone and rebuilt.get_config()["intermediate_dim"] == 48
    assert "rebuild: a LlamaBackbone from its own config" in " ".join(resolved.notes)
    rebuilt.save_to_preset(str(tmp_path / "preset"))
    loaded = M.LlamaBackbone.from_preset(str(tmp_path / "preset"))
    feed = random_inputs(model, seed=5)
    np.testing.assert_allclose(outputs(loaded, feed), outputs(rebuilt, feed), rtol=1e-5, atol=1e-5)


UNEQUAL = ("  - layer: 'transformer_layer_0/feedforward_intermediate_dense'\n    remove: [1, 2]\n"
           "  - layer: 'transformer_layer_1/feedforward_intermediate_dense'\n    remove: [3]\n")


def test_different_widths_per_block_give_a_functional_model_that_loads(tmp_path):
    model = backbone("bert")
    text = UNEQUAL
    rebuilt, resolved, difference = apply(spec_of(text), model)
    assert difference is not None and difference < 1e-4
    assert type(rebuilt) is keras.Model or type(rebuilt).__name__ == "Functional"
    assert "its blocks keep different widths" in " ".join(resolved.notes)
    rebuilt.save(tmp_path / "pruned.keras")
    loaded = keras.saving.load_model(tmp_path / "pruned.keras")
    feed = random_inputs(model, seed=2)
    np.testing.assert_allclose(outputs(loaded, feed), outputs(rebuilt, feed), rtol=1e-5, atol=1e-5)
    assert loaded.get_layer("transformer_layer_0").intermediate_dim == 62


def test_different_widths_per_block_of_llama_rebuild_as_prunec_blocks_that_load(tmp_path):
    """LlamaTransformerDecoder's config does not round-trip: its functional rebuild uses
    prunec's class (compiler.hub_blocks), which does."""
    model = backbone("llama")
    rebuilt, resolved, difference = apply(spec_of(UNEQUAL), model)
    assert difference is not None and difference < 1e-4
    assert "prunec's blocks (PrunecLlamaTransformerDecoder)" in " ".join(resolved.notes)
    producer = {f"transformer_layer_{i}": {"feedforward_intermediate_dense/kernel": (1, removed)}
                for i, removed in ((0, [1, 2]), (1, [3]))}
    reader = {f"transformer_layer_{i}": {"feedforward_output_dense/kernel": (0, removed)}
              for i, removed in ((0, [1, 2]), (1, [3]))}
    assert_law(model, rebuilt, resolved, producer, reader)
    rebuilt.save(tmp_path / "pruned.keras")
    loaded = keras.saving.load_model(tmp_path / "pruned.keras")
    feed = random_inputs(model, seed=2)
    np.testing.assert_allclose(outputs(loaded, feed), outputs(rebuilt, feed), rtol=1e-5, atol=1e-5)
    assert loaded.get_layer("transformer_layer_1").intermediate_dim == 63


def test_a_task_model_prunes_its_backbone_and_keeps_its_class_and_preprocessor():
    backbone_model = backbone("bert")
    task = M.BertTextClassifier(backbone_model, num_classes=3, preprocessor=None)
    name = backbone_model.name                   # keras numbers it: bert_backbone_3 ...
    text = f"  - layer: '{name}/transformer_layer_*/feedforward_intermediate_dense'\n    remove: [1, 2]\n"
    rebuilt, resolved, difference = apply(spec_of(text), task)
    assert difference is not None and difference < 1e-4
    assert type(rebuilt) is M.BertTextClassifier and type(rebuilt.backbone) is M.BertBackbone
    assert rebuilt.preprocessor is task.preprocessor
    assert rebuilt.backbone.get_config()["intermediate_dim"] == 62
    assert resolved.params == (task.count_params(), rebuilt.count_params())
    with pytest.raises(ConstraintError) as caught:
        apply(spec_of(UNEQUAL.replace("'transformer", f"'{name}/transformer")), task)
    assert str(caught.value).startswith(
        f"BertTextClassifier: its backbone '{name}' would not keep its class (its blocks keep "
        "different widths)")


def test_a_causal_lm_whose_head_reuses_the_backbone_embedding_prunes_its_ffn():
    """GPT2CausalLM calls its backbone's token embedding a second time, outside the backbone
    (reverse=True, the tied output head): one shared layer across two nesting levels."""
    keras.utils.set_random_seed(0)
    backbone_model = M.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
                                    intermediate_dim=32, max_sequence_length=16)
    task = M.GPT2CausalLM(backbone=backbone_model, preprocessor=None)
    name = backbone_model.name
    text = f"  - layer: '{name}/transformer_layer_*/feedforward_intermediate_dense'\n    remove: [1, 5]\n"
    rebuilt, resolved, _ = apply(spec_of(text), task)
    assert type(rebuilt) is M.GPT2CausalLM and type(rebuilt.backbone) is M.GPT2Backbone
    producer = {f"{name}/transformer_layer_{i}": {
        "feedforward_intermediate_dense/kernel": (1, [1, 5]),
        "feedforward_intermediate_dense/bias": (0, [1, 5])} for i in range(2)}
    reader = {f"{name}/transformer_layer_{i}": {"feedforward_output_dense/kernel": (0, [1, 5])}
              for i in range(2)}
    assert_law(task, rebuilt, resolved, producer, reader)


def test_a_tied_llama_is_rebuilt_tied():
    """``LlamaBackbone.get_config`` omits ``tie_word_embeddings``: rebuilt from it, a tied Llama
    (Llama 3.2's layout) came back untied and FFN removal was refused ("rebuilt layer
    'token_embedding' has weights [..., 'reverse_embeddings']"). The reference is built by the
    constructor itself, tied, with the producer columns zeroed: no prunec code, no get_config."""
    def tied():
        keras.utils.set_random_seed(0)
        return M.LlamaBackbone(tie_word_embeddings=True, **GQA, **COMMON)

    model = tied()
    rng = np.random.default_rng(1)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.3, tuple(variable.shape)).astype(variable.dtype))
    text = "  - layer: 'transformer_layer_*/feedforward_intermediate_dense'\n    remove: [1, 5, 6]\n"
    rebuilt, resolved, difference = apply(spec_of(text), model)
    assert difference is not None and difference < 1e-4
    assert type(rebuilt) is M.LlamaBackbone and rebuilt.tie_word_embeddings
    assert [v.path for v in rebuilt.get_layer("token_embedding").weights] == \
        ["token_embedding/embeddings"]
    expected = tied()
    expected.set_weights(model.get_weights())
    reference.zero_weights(expected, {f"transformer_layer_{i}": {
        "feedforward_intermediate_dense/kernel": (1, [1, 5, 6])} for i in (0, 1)})
    feed = random_inputs(model, batch=2, seed=3)
    a = outputs(expected, feed)
    np.testing.assert_allclose(outputs(rebuilt, feed), a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    assert np.abs(outputs(model, feed) - a).max() > 1e-3 * np.abs(a).max()
    assert resolved.params == (model.count_params(), rebuilt.count_params())


def test_unequal_query_groups_blame_the_heads_rule_not_an_earlier_ffn_rule():
    """The refusal named the lowest-numbered rule that removed anything in the block (here the
    FFN rule, line 3) instead of the rule that removed the query heads (rule 2, line 5)."""
    with pytest.raises(ConstraintError) as caught:
        plan(backbone("mistral"), spec_of(
            "  - layer: 'transformer_layer_*/feedforward_intermediate_dense'\n    remove: [0]\n"
            "  - layer: 'transformer_layer_0/self_attention'\n    unit: heads\n    remove: [0]\n"))
    assert str(caught.value).startswith(
        "spec.yaml:5:5: rule 2 (layer 'transformer_layer_0/self_attention', unit heads): removing "
        "these query heads of 'transformer_layer_0/self_attention' leaves key/value group 0")
