"""Helpers of the breadth tests (splits, shuffles, preprocessing, activations, plan warnings).

Every case builds a small model, names the channels to remove and, by hand, which layer inputs must
then read zero; ``exactness.assert_prunes_exactly`` (re-exported here with ``spec_of`` and
``refusal``) checks the rebuilt model against that reference.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from exactness import assert_prunes_exactly, refusal, spec_of

__all__ = ["spec_of", "randomized", "model_of", "assert_prunes_exactly", "refusal"]


def randomized(model: keras.Model, seed: int = 0) -> keras.Model:
    """Every bias and per-channel statistic random and non-trivial."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if variable.name in ("bias", "beta", "moving_mean", "alpha", "mean"):
            variable.assign(rng.normal(0, 0.3, shape).astype("float32"))
        elif variable.name in ("gamma", "moving_variance", "variance", "scale"):
            variable.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
    for layer in model.layers:
        if hasattr(layer, "finalize_state"):      # an adapted Normalization's broadcast mean
            layer.finalize_state()
    return model


def model_of(build, input_shape=(6, 6, 3), head=True, name="case") -> keras.Model:
    """``build(x)`` -> y on an image input, then (``head``) global pooling and Dense(2, 'head')."""
    keras.utils.set_random_seed(0)
    x = keras.Input(input_shape, name="image")
    y = build(x)
    if head:
        if len(y.shape) == 4:
            y = layers.GlobalAveragePooling2D(name="pool")(y)
        y = layers.Dense(2, name="head")(y)
    return randomized(keras.Model(x, y, name=name))
