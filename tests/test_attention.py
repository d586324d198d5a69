"""Attention heads as a named channel block (``unit: heads``), checked against zeroed copies.

The law for heads: removing head ``h`` must equal the original with head ``h``'s value projection
zeroed (its attention output is then 0), and equally the original with the output projection's
rows for ``h`` zeroed; the two references are checked against each other and against the
original, so neither can pass by accident. Query/key/value channels follow the producer route:
zeroing the producer's column. Both references are built by ``reference.zeroed_weights_model``,
without prunec code.
"""

import keras
import numpy as np
import pytest

import reference
from compiler.api import apply, build_graph, format_plan, plan
from compiler.errors import ConstraintError
from exactness import assert_params_counted, spec_of
from models import randomize


def attention_model(heads=4, key_dim=8, value_dim=None, output_shape=None, cross=False, gate=False):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6, 16), name="tokens")
    x = keras.layers.Dense(16, name="proj")(tokens)
    mha = keras.layers.MultiHeadAttention(heads, key_dim, value_dim=value_dim, name="mha",
                                          output_shape=output_shape, use_gate=gate)
    if cross:
        memory = keras.Input((5, 12), name="memory")
        m = keras.layers.Dense(10, name="memory_proj")(memory)
        a = mha(x, m, key=keras.layers.Dense(9, name="key_proj")(memory))
        inputs = [tokens, memory]
    else:
        a = mha(x, x)
        inputs = tokens
    y = keras.layers.Dense(5, name="head")(keras.layers.GlobalAveragePooling1D(name="pool")(a))
    return randomize(keras.Model(inputs, y), 1, kernels=True)


def inputs_of(model, seed=0):
    return reference.random_inputs(model, seed=seed)


def assert_same(reference_model, rebuilt, model):
    x = inputs_of(model)
    reference.assert_outputs_close(reference_model, rebuilt, x)
    assert reference.relative_difference(model, reference_model, x) > 1e-3


def test_removed_heads_equal_zeroed_value_projections_and_zeroed_output_rows():
    model = attention_model()
    rebuilt, resolved, difference = apply(spec_of("  - layer: mha\n    unit: heads\n    remove: [1, 3]\n"), model)
    assert difference is not None and difference < 1e-4
    mha = rebuilt.get_layer("mha")
    assert mha.num_heads == 2
    assert {v.path.split("/", 1)[1]: tuple(v.shape) for v in mha.weights} == {
        "query/kernel": (16, 2, 8), "query/bias": (2, 8), "key/kernel": (16, 2, 8), "key/bias": (2, 8),
        "value/kernel": (16, 2, 8), "value/bias": (2, 8), "attention_output/kernel": (2, 8, 16),
        "attention_output/bias": (16,)}
    by_value = reference.zeroed_weights_model(model, {"mha": {"value/kernel": (1, [1, 3]),
                                                               "value/bias": (0, [1, 3])}})
    by_output = reference.zeroed_weights_model(model, {"mha": {"attention_output/kernel": (0, [1, 3])}})
    x = inputs_of(model)
    reference.assert_outputs_close(by_value, by_output, x)     # the two routes agree
    assert_same(by_value, rebuilt, model)
    assert_params_counted(resolved, model, rebuilt)
    (group,) = resolved.groups
    assert [tuple(m) for m in group.members] == [("mha", (1, 3), "heads")]
    assert "mha (heads)  removes 2 of 4  1,3" in format_plan(resolved)


def test_heads_and_channels_of_query_key_value_and_outputs_together():
    model = attention_model(cross=True, value_dim=6, output_shape=11)
    rules = ("  - layer: mha\n    unit: heads\n    keep: [0, 2]\n"
             "  - layer: proj\n    remove: [0, 5]\n  - layer: memory_proj\n    remove: [3]\n"
             "  - layer: key_proj\n    remove: [1, 8]\n  - layer: mha\n    remove: [2, 10]\n")
    rebuilt, resolved, _ = apply(spec_of(rules), model)
    expected = reference.zeroed_weights_model(model, {
        "mha": {"value/kernel": (1, [1, 3]), "value/bias": (0, [1, 3]),
                "attention_output/kernel": (2, [2, 10]), "attention_output/bias": (0, [2, 10])},
        "proj": {"kernel": (1, [0, 5]), "bias": (0, [0, 5])},
        "memory_proj": {"kernel": (1, [3]), "bias": (0, [3])},
        "key_proj": {"kernel": (1, [1, 8]), "bias": (0, [1, 8])}})
    assert_same(expected, rebuilt, model)
    assert rebuilt.get_layer("mha").output.shape[-1] == 9
    assert_params_counted(resolved, model, rebuilt)


def test_a_gated_attention_drops_its_gate_with_the_head():
    model = attention_model(gate=True)
    rebuilt, resolved, _ = apply(spec_of("  - layer: mha\n    unit: heads\n    remove: [0]\n"), model)
    expected = reference.zeroed_weights_model(model, {"mha": {"attention_output/kernel": (0, [0])}})
    assert_same(expected, rebuilt, model)
    assert_params_counted(resolved, model, rebuilt)
    assert tuple(rebuilt.get_layer("mha")._gate_dense.kernel.shape) == (16, 3, 8)


def test_heads_by_criterion_rank_every_weight_of_a_head():
    model = attention_model()
    resolved = plan(model, spec_of("  - layer: mha\n    unit: heads\n    count: 1\n    criterion: l2\n"))
    weights = {v.path.split("/", 1)[1]: v.numpy() for v in model.get_layer("mha").weights}
    energy = np.zeros(4)
    for name in ("query", "key", "value"):
        energy += (weights[f"{name}/kernel"] ** 2).sum(axis=(0, 2)) + (weights[f"{name}/bias"] ** 2).sum(axis=1)
    energy += (weights["attention_output/kernel"] ** 2).sum(axis=(1, 2))
    assert [m.removed for m in resolved.groups[0].members] == [(int(np.argmin(energy)),)]


def test_unit_heads_on_a_layer_without_heads_is_one_line_naming_it():
    with pytest.raises(ConstraintError) as caught:
        plan(attention_model(), spec_of("  - layer: proj\n    unit: heads\n    remove: [0]\n"))
    assert str(caught.value) == ("spec.yaml:4:11: rule 1 (layer 'proj', unit heads): 'proj' (Dense) has "
                                 "no unit 'heads' (hint: its units: outputs)")
    with pytest.raises(ConstraintError) as caught:
        plan(attention_model(), spec_of("  - layer: mha\n    unit: heads\n    remove: [4]\n"))
    assert "index 4 is out of range for 'mha' (MultiHeadAttention, 4 heads) (hint: valid range 0..3)" in str(caught.value)
    with pytest.raises(ConstraintError) as caught:
        plan(attention_model(), spec_of("  - layer: mha\n    unit: heads\n    count: 4\n"))
    assert "count 4 would remove every head of 'mha'" in str(caught.value)


def test_a_glob_with_a_unit_selects_only_the_layers_that_have_it():
    resolved = plan(attention_model(), spec_of("  - layer: '*'\n    unit: heads\n    count: 1\n"))
    assert [m.label for g in resolved.groups for m in g.members] == ["mha (heads)"]


def test_the_sub_layer_path_selects_the_attention_output():
    model = attention_model()
    resolved = plan(model, spec_of("  - layer: mha/attention_output\n    remove: [3]\n"))
    assert [tuple(m) for m in resolved.groups[0].members] == [("mha", (3,), "outputs")]
    graph = build_graph(model)
    assert type(graph.layers["mha/attention_output"]).__name__ == "EinsumDense"


def test_an_attention_mask_input_is_fixed():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6, 8))
    mask_source = keras.layers.Dense(6, name="mask_source")(tokens)
    a = keras.layers.MultiHeadAttention(2, 4, name="mha")(tokens, tokens, attention_mask=mask_source)
    model = keras.Model(tokens, keras.layers.Dense(3, name="head")(a))
    with pytest.raises(ConstraintError) as caught:
        plan(model, spec_of("  - layer: mask_source\n    remove: [0]\n"))
    assert "it is an attention mask, not channels" in str(caught.value)
