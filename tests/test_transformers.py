"""Transformer building blocks outside keras-hub: EinsumDense producers, checked against zeroed
copies built without prunec code (``reference.zeroed_weights_model``)."""

import keras
import numpy as np
import pytest

import reference
from exactness import spec_of
from compiler.api import apply, plan
from compiler.errors import ConstraintError
from compiler.verify import relative_difference



def einsum_model(equation="abc,cd->abd", output_shape=(6, 12), bias_axes="d"):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6, 16), name="tokens")
    x = keras.layers.Dense(16, name="proj")(tokens)
    y = keras.layers.EinsumDense(equation, output_shape=output_shape, bias_axes=bias_axes,
                                 activation="relu", name="ein")(x)
    y = keras.layers.Dense(5, name="head")(y)
    model = keras.Model(tokens, y)
    rng = np.random.default_rng(1)
    for v in model.weights:
        v.assign(rng.normal(0, 0.4, tuple(v.shape)).astype("float32"))
    return model


@pytest.mark.parametrize("equation, output_shape, bias_axes, axis", [
    ("abc,cd->abd", (6, 12), "d", 1),
    ("abc,dc->abd", (6, 12), None, 0),
    ("abc,cde->abde", (6, 3, 12), "de", 2),
])
def test_an_einsum_whose_output_axis_is_its_kernels_own_is_a_producer(equation, output_shape,
                                                                       bias_axes, axis):
    model = einsum_model(equation, output_shape, bias_axes)
    rebuilt, resolved, difference = apply(
        spec_of("  - layer: ein\n    remove: [2, 7]\n  - layer: proj\n    remove: [1]\n"), model)
    assert difference is not None and difference < 1e-4
    zero = {"ein": {"kernel": (axis, [2, 7])}, "proj": {"kernel": (1, [1]), "bias": (0, [1])}}
    if bias_axes:
        zero["ein"]["bias"] = (-1 % len(model.get_layer("ein").bias.shape), [2, 7])
    expected = reference.zeroed_weights_model(model, zero)
    x = reference.random_inputs(model)
    reference.assert_outputs_close(expected, rebuilt, x)
    assert relative_difference(model(x), expected(x)) > 1e-3
    assert rebuilt.get_layer("ein").output.shape[-1] == 10
    assert resolved.params == (model.count_params(), rebuilt.count_params())
    (change,) = [c for c in resolved.layers if c.path == "ein"]
    assert change.flops[1] < change.flops[0]


def test_an_einsum_that_does_not_own_its_output_axis_fixes_it_with_the_reason():
    model = einsum_model("abc,bc->abc", (6, 16), None)
    with pytest.raises(ConstraintError) as caught:
        plan(model, spec_of("  - layer: proj\n    remove: [1]\n"))
    assert "its equation 'abc,bc->abc' does not give the output channels ('c') an axis of its own kernel" \
        in str(caught.value)
