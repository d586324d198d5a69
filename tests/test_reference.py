"""Tests of the test oracle itself (tests/reference.py) and of the model
factories (tests/models.py).

The oracle must be right for compiler tests to mean anything, so it is checked
against things that do not depend on it:
- zeroing the reads of a Dense/Conv layer's input channels is the same as
  zeroing the matching input rows of its kernel (checked on a freshly built
  copy of the model, no cloning involved);
- hand-pruned models (fewer units / filters, sliced weights) compute what the
  oracle computes;
- a plain numpy forward pass for small Dense models;
- zeroing nothing reproduces the original, zeroing something changes outputs.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

import models
from models import FACTORIES
from reference import (
    assert_outputs_close,
    get_layer_by_path,
    hand_sliced_dense_pair,
    layer_paths,
    random_inputs,
    zeroed_reads_model,
)


# ---------------------------------------------------------------- helpers


def _np(v) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(v))


def _outputs(model, x) -> list[np.ndarray]:
    return [_np(o) for o in keras.tree.flatten(model(x, training=False))]


def _rel_diff(a, b, x) -> float:
    """Largest relative max-difference over the outputs of a and b."""
    return max(
        float(np.max(np.abs(ya - yb)) / (np.max(np.abs(ya)) + 1e-6))
        for ya, yb in zip(_outputs(a, x), _outputs(b, x))
    )


def _zero_kernel_inputs(model, path: str, idx) -> None:
    """In place: zero the input rows ``idx`` of the kernel of Dense/Conv
    ``path`` (kernel shape (..., in, out))."""
    layer = get_layer_by_path(model, path)
    k = _np(layer.kernel).copy()
    k[..., list(idx), :] = 0
    layer.kernel.assign(k)


def _copy_kernel_bias(src, dst, kernel=None, bias=None):
    dst.kernel.assign(_np(src.kernel) if kernel is None else kernel)
    dst.bias.assign(_np(src.bias) if bias is None else bias)


# ------------------------------------------------------------ the factories


def test_factories_build_and_run(factory_name, factory):
    model = factory()
    x = random_inputs(model)
    outs = _outputs(model, x)
    assert outs and all(np.all(np.isfinite(o)) for o in outs)
    assert all(o.shape[0] == 4 for o in outs)
    # Outputs are not degenerate (all-equal across the batch).
    assert any(np.ptp(o, axis=0).max() > 1e-4 for o in outs), factory_name


def test_factories_are_deterministic(factory):
    a, b = factory(), factory()
    wa = {v.path: _np(v) for v in a.weights}
    wb = {v.path: _np(v) for v in b.weights}
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def test_factories_name_every_layer(factory):
    """Auto-generated names get a new suffix on every build (dense, dense_1,
    ...), explicit names do not: two builds must have the same names."""
    a, b = factory(), factory()
    assert list(layer_paths(a)) == list(layer_paths(b))
    assert [t.name for t in a.inputs] == [t.name for t in b.inputs]
    assert a.name == b.name


def test_factories_weights_are_nontrivial(factory):
    model = factory()
    for v in model.weights:
        value = _np(v)
        if v.name == "bias":
            assert np.all(value != 0), v.path
        if v.name == "moving_variance":
            assert np.all(value > 0) and not np.allclose(value, 1), v.path
        if v.name in ("moving_mean", "beta"):
            assert not np.allclose(value, 0), v.path
        if v.name == "gamma":
            assert not np.allclose(value, 1), v.path


def test_mnist_cnn_structure():
    model = models.mnist_cnn()
    assert isinstance(model, keras.Sequential)
    assert [l.name for l in model.layers] == [
        "conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "fc2",
    ]
    assert model.compute_output_shape((None, 28, 28, 1)) == (None, 10)
    three = models.mnist_cnn(classes=3)
    assert three.compute_output_shape((None, 28, 28, 1)) == (None, 3)
    assert model.get_layer("fc1").kernel.shape == (7 * 7 * 64, 512)


def test_nested_model_structure():
    model = models.nested_model()
    backbone = model.get_layer("backbone")
    assert isinstance(backbone, keras.Sequential)
    assert [l.name for l in backbone.layers] == ["conv1", "relu", "conv2"]
    assert set(layer_paths(model)) == {
        "backbone", "backbone/conv1", "backbone/relu", "backbone/conv2",
        "flatten", "head",
    }


def test_shared_layer_is_shared():
    model = models.shared_layer_model()
    assert len(model.get_layer("shared")._inbound_nodes) == 2
    assert len([l for l in model.layers if l.name == "shared"]) == 1


# ----------------------------------------------------- random_inputs & co.


def test_random_inputs_shapes_and_determinism():
    single = models.mnist_cnn()
    x = random_inputs(single, batch=3)
    assert isinstance(x, np.ndarray) and x.shape == (3, 28, 28, 1)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, random_inputs(single, batch=3))
    assert not np.array_equal(x, random_inputs(single, batch=3, seed=1))

    multi = models.multi_input_model()
    xs = random_inputs(multi)
    assert isinstance(xs, list) and [a.shape for a in xs] == [(4, 6), (4, 4)]

    inp = keras.Input((None, 5))
    dyn = keras.Model(inp, keras.layers.Dense(2, name="d")(inp))
    assert random_inputs(dyn, batch=2).shape == (2, 8, 5)


def test_assert_outputs_close_detects_differences():
    a = models.multi_output_model()
    b = models.multi_output_model()
    x = random_inputs(a)
    assert_outputs_close(a, b, x, rtol=0)
    # Perturb only the second head: the error must name output 1.
    k = _np(b.get_layer("out_b").kernel)
    b.get_layer("out_b").kernel.assign(k * 1.01)
    with pytest.raises(AssertionError, match=r"output 1 .*relative max diff"):
        assert_outputs_close(a, b, x)
    assert_outputs_close(a, b, x, rtol=0.1)

    inp = keras.Input((10,), name="features")
    one = keras.Model(inp, keras.layers.Dense(2, name="out_a")(inp))
    with pytest.raises(AssertionError, match="2 outputs"):
        assert_outputs_close(a, one, x)


def test_get_layer_by_path():
    model = models.nested_model()
    assert get_layer_by_path(model, "head").name == "head"
    conv2 = get_layer_by_path(model, "backbone/conv2")
    assert conv2 is model.get_layer("backbone").get_layer("conv2")
    with pytest.raises(KeyError):
        get_layer_by_path(model, "backbone/nope")
    with pytest.raises(KeyError):
        get_layer_by_path(model, "head/kernel")


# ------------------------------------------------ zeroed_reads_model basics


def test_zeroing_nothing_reproduces_outputs(factory):
    model = factory()
    z = zeroed_reads_model(model, {})
    assert z is not model
    assert_outputs_close(model, z, random_inputs(model), rtol=1e-6)
    assert_outputs_close(model, z, random_inputs(model, seed=3), rtol=1e-6)


def test_copy_has_same_weights_by_path_and_fresh_variables(factory):
    model = factory()
    z = zeroed_reads_model(model, {})
    orig, new = layer_paths(model), layer_paths(z)
    assert set(orig) == set(new)
    for path, layer in orig.items():
        if isinstance(layer, (keras.Sequential, keras.Model)):
            continue
        other = new[path]
        assert type(other) is type(layer)
        assert other is not layer
        ov = {v.name: v for v in layer.weights}
        nv = {v.name: v for v in other.weights}
        assert ov.keys() == nv.keys(), path
        for name in ov:
            assert nv[name] is not ov[name]
            np.testing.assert_array_equal(_np(ov[name]), _np(nv[name]))


def test_original_model_is_left_untouched():
    model = models.nested_model()
    x = random_inputs(model)
    before = _outputs(model, x)
    nodes = {p: len(l._inbound_nodes) for p, l in layer_paths(model).items()}
    weights = {v.path: _np(v) for v in model.weights}
    z = zeroed_reads_model(model, {"backbone/conv2": [1, 2], "head": [0, 5]})
    assert _rel_diff(model, z, x) > 1e-3
    for a, b in zip(before, _outputs(model, x)):
        np.testing.assert_array_equal(a, b)
    assert nodes == {p: len(l._inbound_nodes) for p, l in layer_paths(model).items()}
    for v in model.weights:
        np.testing.assert_array_equal(weights[v.path], _np(v))


def test_sequential_model_becomes_functional_with_same_layers():
    model = models.mnist_cnn()
    z = zeroed_reads_model(model, {"fc2": [0, 1]})
    assert not isinstance(z, keras.Sequential)
    assert [l.name for l in z.layers if not isinstance(l, keras.layers.InputLayer)] == [
        l.name for l in model.layers
    ]


def test_small_sequential_without_input_layer_object():
    model = keras.Sequential(
        [keras.layers.Dense(6, activation="relu", name="d1"),
         keras.layers.Dense(2, name="d2")],
        name="seq",
    )
    model.build((None, 5))
    x = np.random.default_rng(0).standard_normal((3, 5)).astype("float32")
    z = zeroed_reads_model(model, {"d2": [0, 4]})
    ref = keras.Sequential(
        [keras.layers.Dense(6, activation="relu", name="d1"),
         keras.layers.Dense(2, name="d2")],
    )
    ref.build((None, 5))
    for name in ("d1", "d2"):
        _copy_kernel_bias(model.get_layer(name), ref.get_layer(name))
    _zero_kernel_inputs(ref, "d2", [0, 4])
    assert_outputs_close(ref, z, x, rtol=1e-6)


def test_errors():
    model = models.concat_model()
    with pytest.raises(KeyError, match="nope"):
        zeroed_reads_model(model, {"nope": [0]})
    with pytest.raises(IndexError):
        zeroed_reads_model(model, {"conv_c": [11]})
    with pytest.raises(ValueError, match="multi-input"):
        zeroed_reads_model(model, {"concat": [0]})
    nested = models.nested_model()
    with pytest.raises(KeyError):
        zeroed_reads_model(nested, {"conv2": [0]})  # lives in backbone/


# ---------------- zeroing reads == zeroing kernel input rows (fresh build)

KERNEL_CASES = [
    ("mnist_cnn", {"fc2": list(range(0, 512, 5))}),
    ("mnist_cnn", {"fc1": list(range(0, 3136, 7))}),
    ("mnist_cnn", {"conv2": [0, 5, 31]}),
    ("mnist_cnn", {"conv2": [3, 4], "fc1": [10, 100], "fc2": [7, 8, 9]}),
    ("concat_model", {"conv_c": [0, 6, 10]}),
    ("concat_model", {"head": [1]}),
    ("add_bn_model", {"conv_c": [2, 7]}),
    ("se_model", {"conv_out": [1, 4]}),
    ("se_model", {"se_reduce": [0, 7]}),
    ("se_model", {"se_expand": [1]}),
    ("shared_layer_model", {"shared": [0, 15]}),  # both calls
    ("shared_layer_model", {"head": [3, 11]}),
    ("shared_layer_two_heads_model", {"head_a": [0, 5]}),
    ("shared_layer_two_heads_model", {"shared": [2], "head_b": [4, 6]}),
    ("nested_model", {"backbone/conv2": [0, 7]}),
    ("nested_model", {"backbone/conv1": [1]}),
    ("nested_model", {"backbone/conv2": [3], "head": [0, 1, 2, 50]}),
    ("nested_functional_model", {"backbone/conv2": [2, 5]}),
    ("nested_functional_model", {"backbone/conv1": [0]}),
    ("multi_output_model", {"out_a": [0, 3, 15]}),
    ("multi_output_model", {"out_b": [2]}),
    ("raw_ops_model", {"conv_c": [1, 4]}),
    ("lambda_model", {"head": [0, 7]}),
    ("lambda_elsewhere_model", {"fc1": [2, 9]}),
    ("lambda_elsewhere_model", {"head": [5]}),
    ("multi_input_model", {"fc": [0, 8, 15]}),
]


@pytest.mark.parametrize(
    "name, zero", KERNEL_CASES, ids=[f"{n}-{'+'.join(z)}" for n, z in KERNEL_CASES]
)
def test_zeroed_reads_equal_zeroed_kernel_rows(name, zero):
    model = FACTORIES[name]()
    z = zeroed_reads_model(model, zero)
    expected = FACTORIES[name]()  # fresh, identical weights
    for path, idx in zero.items():
        _zero_kernel_inputs(expected, path, idx)
    for seed in (0, 1):
        x = random_inputs(model, seed=seed)
        assert_outputs_close(expected, z, x, rtol=1e-5)
    # Not vacuous: the zeroing changes what the model computes.
    assert _rel_diff(model, z, random_inputs(model)) > 1e-3


@pytest.mark.parametrize("name", ["nested_model", "nested_functional_model"])
def test_zeroing_input_of_nested_model(name):
    """Zeroing the input channels of the nested model zeroes what its first
    layer (conv1) reads."""
    model = FACTORIES[name]()
    z = zeroed_reads_model(model, {"backbone": [1]})
    expected = FACTORIES[name]()
    _zero_kernel_inputs(expected, "backbone/conv1", [1])
    assert_outputs_close(expected, z, random_inputs(model), rtol=1e-5)
    assert _rel_diff(model, z, random_inputs(model)) > 1e-3


def test_shared_layer_call_sites_are_independent_of_other_layers():
    """Zeroing head_a's reads leaves head_b's output bit-identical."""
    model = models.shared_layer_two_heads_model()
    z = zeroed_reads_model(model, {"head_a": list(range(6))})
    x = random_inputs(model)
    (a0, b0), (a1, b1) = _outputs(model, x), _outputs(z, x)
    np.testing.assert_array_equal(b0, b1)
    assert np.max(np.abs(a0 - a1)) > 1e-3


# -------------------------------------------------- hand-pruned references


def test_mnist_hand_pruned_fc1_matches_oracle():
    """The seed case: fc1 512 -> 412 units, rebuilt by hand."""
    model = models.mnist_cnn()
    remove = np.random.default_rng(0).choice(512, size=100, replace=False)
    w = hand_sliced_dense_pair(model, "fc1", "fc2", remove)
    assert w["fc1"][0].shape == (3136, 412) and w["fc1"][1].shape == (412,)
    assert w["fc2"][0].shape == (412, 10) and w["fc2"][1].shape == (10,)

    pruned = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, padding="same", name="pool1"),
            keras.layers.Conv2D(64, 5, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, padding="same", name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(412, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="fc2"),
        ],
        name="pruned",
    )
    for name in ("conv1", "conv2"):
        _copy_kernel_bias(model.get_layer(name), pruned.get_layer(name))
    for name in ("fc1", "fc2"):
        kernel, bias = w[name]
        _copy_kernel_bias(None, pruned.get_layer(name), kernel, bias)

    oracle = zeroed_reads_model(model, {"fc2": remove})
    x = random_inputs(model)
    assert_outputs_close(oracle, pruned, x)
    assert_outputs_close(oracle, pruned, random_inputs(model, seed=7))
    assert _rel_diff(model, pruned, x) > 1e-3  # pruning did change things


def test_mnist_hand_pruned_conv1_matches_oracle():
    """conv1 32 -> 29 filters through pool1: conv2 reads the kept channels."""
    model = models.mnist_cnn()
    remove = [0, 5, 17]
    keep = [i for i in range(32) if i not in remove]
    pruned = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(29, 5, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, padding="same", name="pool1"),
            keras.layers.Conv2D(64, 5, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, padding="same", name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(512, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="fc2"),
        ]
    )
    c1, c2 = model.get_layer("conv1"), model.get_layer("conv2")
    _copy_kernel_bias(
        None, pruned.get_layer("conv1"),
        _np(c1.kernel)[..., keep], _np(c1.bias)[keep],
    )
    _copy_kernel_bias(
        None, pruned.get_layer("conv2"), _np(c2.kernel)[:, :, keep, :], _np(c2.bias)
    )
    for name in ("fc1", "fc2"):
        _copy_kernel_bias(model.get_layer(name), pruned.get_layer(name))
    oracle = zeroed_reads_model(model, {"conv2": remove})
    assert_outputs_close(oracle, pruned, random_inputs(model))
    assert _rel_diff(model, pruned, random_inputs(model)) > 1e-3


def test_hand_sliced_dense_pair_contents():
    model = models.lambda_elsewhere_model()
    w = hand_sliced_dense_pair(model, "fc0", "fc1", [9, 0, 4, 4])
    keep = [1, 2, 3, 5, 6, 7, 8]
    k0, b0 = _np(model.get_layer("fc0").kernel), _np(model.get_layer("fc0").bias)
    k1, b1 = _np(model.get_layer("fc1").kernel), _np(model.get_layer("fc1").bias)
    np.testing.assert_array_equal(w["fc0"][0], k0[:, keep])
    np.testing.assert_array_equal(w["fc0"][1], b0[keep])
    np.testing.assert_array_equal(w["fc1"][0], k1[keep, :])
    np.testing.assert_array_equal(w["fc1"][1], b1)
    with pytest.raises(TypeError):
        hand_sliced_dense_pair(model, "lam", "fc0", [0])
    with pytest.raises(IndexError):
        hand_sliced_dense_pair(model, "fc0", "fc1", [10])
    with pytest.raises(ValueError):
        hand_sliced_dense_pair(model, "fc0", "fc1", range(10))


def test_hand_pruned_nested_dense_pair():
    """hand_sliced_dense_pair with layer paths, on a pruned multi-output
    trunk (trunk feeds two heads: both must read only the kept units)."""
    model = models.multi_output_model()
    remove = [1, 2, 13]
    w_a = hand_sliced_dense_pair(model, "trunk", "out_a", remove)
    w_b = hand_sliced_dense_pair(model, "trunk", "out_b", remove)
    np.testing.assert_array_equal(w_a["trunk"][0], w_b["trunk"][0])
    x = keras.Input((10,), name="features")
    t = keras.layers.Dense(13, activation="relu", name="trunk")(x)
    pruned = keras.Model(
        x, [keras.layers.Dense(2, name="out_a")(t), keras.layers.Dense(3, name="out_b")(t)]
    )
    _copy_kernel_bias(None, pruned.get_layer("trunk"), *w_a["trunk"])
    _copy_kernel_bias(None, pruned.get_layer("out_a"), *w_a["out_a"])
    _copy_kernel_bias(None, pruned.get_layer("out_b"), *w_b["out_b"])
    oracle = zeroed_reads_model(model, {"out_a": remove, "out_b": remove})
    assert_outputs_close(oracle, pruned, random_inputs(model))


# ------------------------------------------------------ numpy forward pass


def _dense(layer, h, relu):
    y = h @ _np(layer.kernel) + _np(layer.bias)
    return np.maximum(y, 0) if relu else y


def test_multi_input_model_against_numpy():
    model = models.multi_input_model()
    xa, xb = random_inputs(model, batch=5)
    zero = {"fc": [0, 9, 15], "head": [4]}
    z = zeroed_reads_model(model, zero)

    L = model.get_layer
    h = np.concatenate([_dense(L("fa"), xa, True), _dense(L("fb"), xb, True)], -1)
    h[:, zero["fc"]] = 0
    h = _dense(L("fc"), h, True)
    h[:, zero["head"]] = 0
    expected = _dense(L("head"), h, False)
    np.testing.assert_allclose(_outputs(z, [xa, xb])[0], expected, rtol=1e-5, atol=1e-5)


def test_shared_layer_model_against_numpy():
    model = models.shared_layer_model()
    xa, xb = random_inputs(model, batch=5)
    z = zeroed_reads_model(model, {"shared": [3, 4, 5], "head": [0]})
    L = model.get_layer
    xa, xb = xa.copy(), xb.copy()
    xa[:, [3, 4, 5]] = 0
    xb[:, [3, 4, 5]] = 0
    h = _dense(L("shared"), xa, True) + _dense(L("shared"), xb, True)
    h[:, 0] = 0
    expected = _dense(L("head"), h, False)
    np.testing.assert_allclose(_outputs(z, [xa, xb])[0], expected, rtol=1e-5, atol=1e-5)


def test_lambda_model_against_numpy():
    model = models.lambda_model()
    x = random_inputs(model, batch=5)
    z = zeroed_reads_model(model, {"head": [2, 6]})
    h = 2 * _dense(model.get_layer("fc1"), x, True)
    h[:, [2, 6]] = 0
    expected = _dense(model.get_layer("head"), h, False)
    np.testing.assert_allclose(_outputs(z, x)[0], expected, rtol=1e-5, atol=1e-5)


def _attention_model():
    """Cross-attention with a separate key: query, value and key are three tensors, passed
    positionally (query, value) and by keyword (key)."""
    keras.utils.set_random_seed(3)
    tokens = keras.Input((5, 6), name="tokens")
    memory = keras.Input((4, 7), name="memory")
    keys = keras.Input((4, 3), name="keys")
    a = keras.layers.MultiHeadAttention(2, 4, name="mha")(tokens, memory, key=keys)
    return models.randomize(keras.Model([tokens, memory, keys], a), 3, kernels=True)


@pytest.mark.parametrize("argument, weight", [("query", "query/kernel"), ("value", "value/kernel"),
                                              ("key", "key/kernel")])
def test_zeroing_a_named_argument_equals_zeroed_rows_of_its_projection(argument, weight):
    """``{"mha": {argument: idx}}`` zeroes the tensor bound to ``argument`` alone: the same as
    zeroing rows ``idx`` of that argument's projection kernel (set on a fresh copy, no cloning
    of the call involved)."""
    model = _attention_model()
    z = zeroed_reads_model(model, {"mha": {argument: [0, 2]}})
    expected = _attention_model()
    variable = next(v for v in expected.get_layer("mha").weights if v.path == f"mha/{weight}")
    value = _np(variable)
    value[[0, 2]] = 0
    variable.assign(value)
    x = random_inputs(model)
    assert_outputs_close(expected, z, x, rtol=1e-5)
    assert _rel_diff(model, z, x) > 1e-3


def test_zeroing_an_argument_the_call_did_not_get_is_an_error():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((5, 6))
    model = keras.Model(tokens, keras.layers.MultiHeadAttention(2, 4, name="mha")(tokens, tokens))
    with pytest.raises(ValueError, match="no argument 'key'"):
        zeroed_reads_model(model, {"mha": {"key": [0]}})
