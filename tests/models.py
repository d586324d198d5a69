"""Small Keras test models with explicit layer names and deterministic,
non-trivial random weights.

Every factory seeds Keras (``keras.utils.set_random_seed``) so two calls give
identical weights, and then randomizes all biases and BatchNormalization
parameters/statistics (kernels keep their seeded random initialization), so
that no bias is zero and no BatchNormalization is the identity.

``randomize`` is the one weight randomiser of the tests (and the fuzzer): values
by the role of each weight, from a seed.

``FACTORIES`` maps a name to every factory (with default arguments).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers

__all__ = [
    "FACTORIES",
    "randomize",
    "mnist_cnn",
    "concat_model",
    "add_bn_model",
    "se_model",
    "shared_layer_model",
    "shared_layer_two_heads_model",
    "nested_model",
    "nested_functional_model",
    "multi_output_model",
    "raw_ops_model",
    "lambda_model",
    "lambda_elsewhere_model",
    "multi_input_model",
]


# The role of a variable, by its name in its layer: what a random value for it looks like.
ROLES = {
    "kernel": "kernel", "depthwise_kernel": "kernel", "pointwise_kernel": "kernel",
    "bias": "offset", "beta": "offset", "moving_mean": "offset", "alpha": "offset",
    "gamma": "scale", "moving_variance": "scale",
    "variable": "scale",            # an unnamed weight, e.g. ConvNeXt's LayerScale gamma
}


def randomize(model: keras.Model, seed: int = 0, kernels: bool = False,
              roles: dict[str, str] | None = None) -> keras.Model:
    """Give ``model``'s weights deterministic random values by role, in ``model.weights`` order
    from ``numpy.random.default_rng(seed)``: offsets (biases, BN beta and mean, PReLU alpha)
    ~ N(0, 0.4), scales (BN gamma and variance, LayerScale) ~ U(0.5, 1.5), so no bias is zero and
    no normalization is the identity; with ``kernels``, kernels ~ N(0, 1/sqrt(fan-in)) too
    (otherwise they keep their seeded initialization). ``roles`` adds names of one's own
    (``{"w": "kernel"}``); weights of no known role are left alone."""
    roles = {**ROLES, **(roles or {})}
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        role = roles.get(v.name)
        if role == "kernel" and kernels:
            value = rng.normal(0.0, 1.0 / np.sqrt(max(1, math.prod(shape[:-1]))), shape)
        elif role == "offset":
            value = rng.normal(0.0, 0.4, shape)
        elif role == "scale":
            value = rng.uniform(0.5, 1.5, shape)
        else:
            continue
        v.assign(value.astype(v.dtype))
    return model


def _randomize(model: keras.Model, seed: int) -> keras.Model:
    return randomize(model, seed + 1000)


def _seed(seed: int) -> None:
    keras.utils.set_random_seed(seed)


def mnist_cnn(classes: int = 10, seed: int = 1) -> keras.Model:
    """The seed model (Sequential): conv1 -> pool1 -> conv2 -> pool2 ->
    flatten -> fc1 (512, relu) -> fc2 (classes)."""
    _seed(seed)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(2, padding="same", name="pool1"),
            layers.Conv2D(64, 5, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(2, padding="same", name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(512, activation="relu", name="fc1"),
            layers.Dense(classes, name="fc2"),
        ],
        name="mnist_cnn",
    )
    return _randomize(model, seed)


def concat_model(seed: int = 2) -> keras.Model:
    """conv_a (6) and conv_b (5) -> concat -> conv_c (4) -> gap -> head (3)."""
    _seed(seed)
    x = keras.Input((8, 8, 3), name="image")
    a = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_a")(x)
    b = layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_b")(x)
    c = layers.Concatenate(name="concat")([a, b])
    c = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_c")(c)
    c = layers.GlobalAveragePooling2D(name="gap")(c)
    y = layers.Dense(3, name="head")(c)
    return _randomize(keras.Model(x, y, name="concat_model"), seed)


def add_bn_model(seed: int = 3) -> keras.Model:
    """conv_a (8) -> bn_a -> relu_a; conv_b (8); add -> conv_c (4) -> gap ->
    head (2)."""
    _seed(seed)
    x = keras.Input((8, 8, 3), name="image")
    a = layers.Conv2D(8, 3, padding="same", name="conv_a")(x)
    a = layers.BatchNormalization(name="bn_a")(a)
    a = layers.ReLU(name="relu_a")(a)
    b = layers.Conv2D(8, 3, padding="same", name="conv_b")(x)
    s = layers.Add(name="add")([a, b])
    s = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_c")(s)
    s = layers.GlobalAveragePooling2D(name="gap")(s)
    y = layers.Dense(2, name="head")(s)
    return _randomize(keras.Model(x, y, name="add_bn_model"), seed)


def se_model(seed: int = 4) -> keras.Model:
    """Squeeze-excite: conv (8) -> se_pool -> se_reshape -> se_reduce (2) ->
    se_expand (8, sigmoid); se_mul = conv * se_expand -> conv_out (4) -> gap ->
    head (2)."""
    _seed(seed)
    x = keras.Input((8, 8, 3), name="image")
    c = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    s = layers.GlobalAveragePooling2D(name="se_pool")(c)
    s = layers.Reshape((1, 1, 8), name="se_reshape")(s)
    s = layers.Conv2D(2, 1, activation="relu", name="se_reduce")(s)
    s = layers.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
    m = layers.Multiply(name="se_mul")([c, s])
    o = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_out")(m)
    o = layers.GlobalAveragePooling2D(name="gap")(o)
    y = layers.Dense(2, name="head")(o)
    return _randomize(keras.Model(x, y, name="se_model"), seed)


def shared_layer_model(seed: int = 5) -> keras.Model:
    """Inputs in_a, in_b (16,) -> the same Dense 'shared' (12, relu) on both
    -> add -> head (3)."""
    _seed(seed)
    xa = keras.Input((16,), name="in_a")
    xb = keras.Input((16,), name="in_b")
    shared = layers.Dense(12, activation="relu", name="shared")
    s = layers.Add(name="add")([shared(xa), shared(xb)])
    y = layers.Dense(3, name="head")(s)
    return _randomize(keras.Model([xa, xb], y, name="shared_layer_model"), seed)


def shared_layer_two_heads_model(seed: int = 6) -> keras.Model:
    """Inputs in_a, in_b (16,) -> the same Dense 'shared' (12, relu) on both;
    its first output goes to head_a (3), its second to head_b (2).  Two
    outputs."""
    _seed(seed)
    xa = keras.Input((16,), name="in_a")
    xb = keras.Input((16,), name="in_b")
    shared = layers.Dense(12, activation="relu", name="shared")
    ya = layers.Dense(3, name="head_a")(shared(xa))
    yb = layers.Dense(2, name="head_b")(shared(xb))
    return _randomize(
        keras.Model([xa, xb], [ya, yb], name="shared_layer_two_heads_model"), seed
    )


def nested_model(seed: int = 7) -> keras.Model:
    """Functional outer model around a nested Sequential 'backbone'
    (conv1 (8) -> relu -> conv2 (6)) -> flatten -> head (3)."""
    _seed(seed)
    backbone = keras.Sequential(
        [
            layers.Conv2D(8, 3, padding="same", name="conv1"),
            layers.ReLU(name="relu"),
            layers.Conv2D(6, 3, padding="same", name="conv2"),
        ],
        name="backbone",
    )
    x = keras.Input((8, 8, 3), name="image")
    f = layers.Flatten(name="flatten")(backbone(x))
    y = layers.Dense(3, name="head")(f)
    return _randomize(keras.Model(x, y, name="nested_model"), seed)


def nested_functional_model(seed: int = 8) -> keras.Model:
    """Like ``nested_model`` but the 'backbone' is a Functional model
    (conv1 (8) -> relu -> conv2 (6))."""
    _seed(seed)
    bi = keras.Input((8, 8, 3), name="backbone_in")
    b = layers.Conv2D(8, 3, padding="same", name="conv1")(bi)
    b = layers.ReLU(name="relu")(b)
    b = layers.Conv2D(6, 3, padding="same", name="conv2")(b)
    backbone = keras.Model(bi, b, name="backbone")
    x = keras.Input((8, 8, 3), name="image")
    f = layers.Flatten(name="flatten")(backbone(x))
    y = layers.Dense(3, name="head")(f)
    return _randomize(keras.Model(x, y, name="nested_functional_model"), seed)


def multi_output_model(seed: int = 9) -> keras.Model:
    """Input (10,) -> trunk (16, relu) -> out_a (2) and out_b (3)."""
    _seed(seed)
    x = keras.Input((10,), name="features")
    t = layers.Dense(16, activation="relu", name="trunk")(x)
    ya = layers.Dense(2, name="out_a")(t)
    yb = layers.Dense(3, name="out_b")(t)
    return _randomize(keras.Model(x, [ya, yb], name="multi_output_model"), seed)


def raw_ops_model(seed: int = 10) -> keras.Model:
    """Raw keras.ops between layers: y = conv_a(x) * 2 + 1;
    z = ops.add(y, conv_b(x)) -> conv_c (4) -> gap -> head (2)."""
    _seed(seed)
    x = keras.Input((8, 8, 3), name="image")
    a = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_a")(x)
    y = a * 2.0 + 1.0
    b = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b")(x)
    z = keras.ops.add(y, b)
    c = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_c")(z)
    c = layers.GlobalAveragePooling2D(name="gap")(c)
    out = layers.Dense(2, name="head")(c)
    return _randomize(keras.Model(x, out, name="raw_ops_model"), seed)


def lambda_model(seed: int = 11) -> keras.Model:
    """Input (16,) -> fc1 (8, relu) -> lam (t * 2) -> head (2)."""
    _seed(seed)
    x = keras.Input((16,), name="features")
    h = layers.Dense(8, activation="relu", name="fc1")(x)
    h = layers.Lambda(lambda t: t * 2, name="lam")(h)
    y = layers.Dense(2, name="head")(h)
    return _randomize(keras.Model(x, y, name="lambda_model"), seed)


def lambda_elsewhere_model(seed: int = 12) -> keras.Model:
    """Input (16,) -> lam (t * 2) -> fc0 (10, relu) -> fc1 (8, relu) ->
    head (2).  The Lambda is not on the path between fc1 and its readers."""
    _seed(seed)
    x = keras.Input((16,), name="features")
    h = layers.Lambda(lambda t: t * 2, name="lam")(x)
    h = layers.Dense(10, activation="relu", name="fc0")(h)
    h = layers.Dense(8, activation="relu", name="fc1")(h)
    y = layers.Dense(2, name="head")(h)
    return _randomize(keras.Model(x, y, name="lambda_elsewhere_model"), seed)


def multi_input_model(seed: int = 13) -> keras.Model:
    """Inputs a (6,), b (4,) -> fa (8, relu), fb (8, relu) -> cat -> fc (5,
    relu) -> head (2)."""
    _seed(seed)
    xa = keras.Input((6,), name="a")
    xb = keras.Input((4,), name="b")
    ha = layers.Dense(8, activation="relu", name="fa")(xa)
    hb = layers.Dense(8, activation="relu", name="fb")(xb)
    h = layers.Concatenate(name="cat")([ha, hb])
    h = layers.Dense(5, activation="relu", name="fc")(h)
    y = layers.Dense(2, name="head")(h)
    return _randomize(keras.Model([xa, xb], y, name="multi_input_model"), seed)


FACTORIES = {
    "mnist_cnn": mnist_cnn,
    "concat_model": concat_model,
    "add_bn_model": add_bn_model,
    "se_model": se_model,
    "shared_layer_model": shared_layer_model,
    "shared_layer_two_heads_model": shared_layer_two_heads_model,
    "nested_model": nested_model,
    "nested_functional_model": nested_functional_model,
    "multi_output_model": multi_output_model,
    "raw_ops_model": raw_ops_model,
    "lambda_model": lambda_model,
    "lambda_elsewhere_model": lambda_elsewhere_model,
    "multi_input_model": multi_input_model,
}
