"""Data-driven criteria: every score is checked against numpy on the same data."""

import keras
import numpy as np
import pytest
from keras import layers

from compiler import api
from compiler.criteria import Scorer, measure_points
from compiler.data import as_data
from compiler.errors import CompilerError
from compiler.graph import build_graph
from compiler.spec import parse_spec


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,), name="x_in")
    h = layers.Dense(6, activation="relu", name="fc1",
                     bias_initializer=keras.initializers.RandomNormal(0, 0.5, seed=seed))(inputs)
    out = layers.Dense(3, activation="softmax", name="out")(h)
    return keras.Model(inputs, out)


def cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 2))
    x = layers.Conv2D(6, 3, name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Flatten(name="flat")(x)
    out = layers.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inputs, out)
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    bn.gamma.assign(rng.uniform(0.1, 2.0, 6).astype("float32") * rng.choice([-1, 1], 6))
    bn.beta.assign(rng.normal(0, 1, 6).astype("float32"))
    return model


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(50, 8)).astype("float32"), rng.integers(0, 3, 50)


def hidden(model, x):
    w, b = (v.numpy() for v in model.get_layer("fc1").weights)
    return np.maximum(x.astype(np.float64) @ w + b, 0)


def test_activation_and_apoz_are_numpy_means_of_the_hidden_layer(data):
    model, (x, y) = mlp(), data
    graph = build_graph(model)
    ids = graph.calls_by_path["fc1"][0].outputs[0].ids
    h = hidden(model, x)
    scorer = Scorer(as_data((x, y), batch_size=7))       # batches of 7: 50 is not a multiple
    np.testing.assert_allclose(scorer(graph, "activation")[graph.root[ids]], np.abs(h).mean(0), rtol=1e-5)
    np.testing.assert_allclose(scorer(graph, "apoz")[graph.root[ids]], 1 - (h == 0).mean(0), rtol=1e-6)


def test_taylor_is_activation_times_loss_gradient(data):
    model, (x, y) = mlp(), data
    graph = build_graph(model)
    ids = graph.calls_by_path["fc1"][0].outputs[0].ids
    h = hidden(model, x)
    w2, b2 = (v.numpy().astype(np.float64) for v in model.get_layer("out").weights)
    logits = h @ w2 + b2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(3)[y]) @ w2.T                          # d CE / d h, per sample
    expected = np.abs(h * grad).mean(0)
    scorer = Scorer(as_data((x, y), batch_size=16), loss="sparse_categorical_crossentropy")
    np.testing.assert_allclose(scorer(graph, "taylor")[graph.root[ids]], expected, rtol=1e-4)


def test_a_plan_by_activation_removes_the_least_active_units(data, tmp_path):
    model, (x, y) = mlp(), data
    spec = parse_spec("version: 1\nprune:\n  - layer: fc1\n    fraction: 0.5\n"
                      "    criterion: activation\n", "s.yaml")
    resolved = api.plan(model, spec, data=x)
    order = np.argsort(np.abs(hidden(model, x)).mean(0), kind="stable")
    assert resolved.groups[0].members[0].removed == tuple(sorted(order[:3].tolist()))
    assert resolved.criteria == ("activation",)
    assert resolved.data_sha256 == as_data(x).fingerprint()
    assert any("ranked by activation on data sha256:" in note for note in resolved.notes)


def test_conv_channels_are_measured_after_bn_relu_and_pool():
    model = cnn()
    graph = build_graph(model)
    chain = [key for key, _, _ in measure_points(graph)["conv"]]
    assert chain == ["conv", "bn", "relu", "pool"]
    x = np.random.default_rng(2).normal(size=(20, 8, 8, 2)).astype("float32")
    pooled = keras.Model(model.inputs, model.get_layer("pool").output)(x).numpy().astype(np.float64)
    ids = graph.calls_by_path["conv"][0].outputs[0].ids
    scorer = Scorer(as_data(x, batch_size=6))
    np.testing.assert_allclose(scorer(graph, "activation")[graph.root[ids]],
                               np.abs(pooled).mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(scorer(graph, "apoz")[graph.root[ids]],
                               1 - (pooled == 0).mean((0, 1, 2)), rtol=1e-6)


def test_bn_scale_ranks_by_absolute_gamma_and_needs_no_data():
    model = cnn()
    spec = parse_spec("version: 1\nprune:\n  - layer: conv\n    count: 2\n    criterion: bn_scale\n",
                      "s.yaml")
    gamma = np.abs(model.get_layer("bn").gamma.numpy())
    resolved = api.plan(model, spec)
    assert resolved.groups[0].members[0].removed == tuple(sorted(np.argsort(gamma)[:2].tolist()))


def test_bn_scale_without_a_batchnorm_is_an_error_naming_the_layer():
    spec = parse_spec("version: 1\nprune:\n  - layer: fc1\n    count: 2\n    criterion: bn_scale\n",
                      "s.yaml")
    with pytest.raises(CompilerError) as error:
        api.plan(mlp(), spec)
    assert str(error.value) == (
        "s.yaml:5:16: rule 1 (layer 'fc1'): criterion 'bn_scale' has no score for 'fc1' (no "
        "BatchNormalization follows it) (hint: use another criterion for this layer, or 'exclude' it)")


def test_a_data_criterion_without_data_says_to_pass_data():
    spec = parse_spec("version: 1\nprune:\n  - layer: fc1\n    count: 2\n    criterion: apoz\n",
                      "s.yaml")
    with pytest.raises(CompilerError) as error:
        api.plan(mlp(), spec)
    assert str(error.value) == (
        "s.yaml:5:16: rule 1 (layer 'fc1'): criterion 'apoz' needs data (hint: pass --data "
        "FILE.npz (or add 'data:' to the spec; data= in the Python API))")


def test_taylor_needs_labels_and_a_loss(data):
    x, y = data
    spec = parse_spec("version: 1\nprune:\n  - layer: fc1\n    count: 2\n    criterion: taylor\n",
                      "s.yaml")
    with pytest.raises(CompilerError, match="criterion 'taylor' needs a loss"):
        api.plan(mlp(), spec, data=(x, y))
    spec = parse_spec("version: 1\nloss: sparse_categorical_crossentropy\nprune:\n  - layer: fc1\n"
                      "    count: 2\n    criterion: taylor\n", "s.yaml")
    with pytest.raises(CompilerError) as error:
        api.plan(mlp(), spec, data=x)
    assert "no array 'y' (labels) (criterion 'taylor' needs labels)" in str(error.value)


def test_same_data_in_any_form_gives_the_same_plan(data):
    import tensorflow as tf
    model, (x, y) = mlp(), data
    spec = parse_spec("version: 1\nprune:\n  - layer: fc1\n    count: 3\n    criterion: activation\n",
                      "s.yaml")
    forms = [x, {"x_in": x}, (x, y), tf.data.Dataset.from_tensor_slices((x, y)).batch(9),
             [(x[i:i + 10], y[i:i + 10]) for i in range(0, 50, 10)]]
    removed = {api.plan(model, spec, data=form).groups[0].members[0].removed for form in forms}
    assert len(removed) == 1
