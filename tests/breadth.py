"""Helpers of the breadth tests (splits, shuffles, preprocessing, activations, plan warnings).

Every case builds a small model, names the channels to remove and, by hand, which layer inputs must
then read zero; ``reference.zeroed_reads_model`` (no prunec code) builds that model and the rebuilt
one must match it. Parameter counts are checked against Keras' own ``count_params``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import reference
from compiler.api import apply, build_graph, parse_spec, plan
from compiler.errors import ConstraintError
from compiler.verify import relative_difference

__all__ = ["spec_of", "randomized", "model_of", "assert_prunes_exactly", "refusal"]


def spec_of(text: str):
    return parse_spec("version: 1\nprune:\n" + text, "spec.yaml")


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


def assert_prunes_exactly(model, rules: str, zero: dict, params_after: int | None = None, x=None):
    """Apply ``rules``; the rebuilt model equals the oracle that zeroes ``zero``'s reads."""
    resolved = plan(build_graph(model), spec_of(rules))
    assert resolved.params[0] == model.count_params()
    rebuilt, resolved, difference = apply(spec_of(rules), model)
    assert resolved.params[1] == rebuilt.count_params()
    if params_after is not None:
        assert rebuilt.count_params() == params_after
    assert difference is None or difference < 1e-4
    x = reference.random_inputs(model) if x is None else x
    oracle = reference.zeroed_reads_model(model, zero)
    reference.assert_outputs_close(oracle, rebuilt, x)
    # the removal matters: the original differs from the oracle, so the check above can fail
    assert relative_difference(model(x, training=False), oracle(x, training=False)) > 1e-6
    return rebuilt, resolved


def refusal(model, rules: str) -> str:
    with pytest.raises(ConstraintError) as caught:
        plan(build_graph(model), spec_of(rules))
    return str(caught.value)
