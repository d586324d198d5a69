"""What ``apply`` emits: mask mode's shapes and zeroed entries, a model that saves and loads
without custom objects, an untouched original, and verification refusing a broken rebuild."""

import keras
import numpy as np
import pytest

import models
import reference
from compiler.api import apply, build_graph, emit, plan
from compiler.errors import VerificationError
from compiler.verify import verify
from exactness import assert_params_counted, spec_of


# -- mask mode --------------------------------------------------------------------------------------

def test_mask_mode_keeps_shapes_and_equals_slice_mode():
    model = models.add_bn_model()
    spec = spec_of("  - layer: conv_a\n    remove: [1, 2]\n")
    sliced, resolved, _ = apply(spec, model, mode="slice")
    masked, masked_plan, difference = apply(spec, model, mode="mask")
    assert difference < 1e-4
    assert_params_counted(resolved, model, sliced)
    assert masked_plan.params == resolved.params          # the plan counts what slicing keeps
    assert masked.count_params() == model.count_params()
    assert masked.get_layer("conv_a").filters == 8
    assert not np.any(masked.get_layer("conv_a").get_weights()[0][..., [1, 2]])
    x = reference.random_inputs(model)
    reference.assert_outputs_close(sliced, masked, x)


def test_mask_mode_zeroes_exactly_the_entries_slicing_deletes():
    model = models.add_bn_model()
    spec = spec_of("  - layer: conv_a\n    remove: [1, 2]\n  - layer: conv_c\n    remove: [0]\n")
    masked, _, _ = apply(spec, model, mode="mask")
    gone = [1, 2]
    expected = {}
    for name in ("conv_a", "bn_a", "conv_b", "conv_c", "head"):
        expected[name] = [w.copy() for w in model.get_layer(name).get_weights()]
    for w in expected["conv_a"] + expected["conv_b"]:
        w[..., gone] = 0                    # kernel columns and biases
    for w in expected["bn_a"]:
        w[gone] = 0                         # gamma, beta, moving mean, moving variance
    kc, bc = expected["conv_c"]
    kc[:, :, gone, :] = 0                   # rows reading removed add channels
    kc[..., 0] = 0; bc[0] = 0               # conv_c's own removed filter
    expected["head"][0][0, :] = 0
    for name, weights in expected.items():
        for want, got in zip(weights, masked.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want, err_msg=name)


# -- the rebuilt model ------------------------------------------------------------------------------

def test_rebuilt_model_saves_and_loads_without_custom_objects(tmp_path):
    model = models.se_model()
    rebuilt, resolved, _ = apply(spec_of("  - layer: conv\n    remove: [0]\n"), model)
    path = tmp_path / "small.keras"
    rebuilt.save(path)
    loaded = keras.saving.load_model(path)
    assert_params_counted(resolved, model, loaded)
    x = reference.random_inputs(model)
    reference.assert_outputs_close(rebuilt, loaded, x, rtol=1e-6)


def test_original_model_is_not_mutated():
    model = models.mnist_cnn()
    before = [w.copy() for w in model.get_weights()]
    apply(spec_of("  - layer: conv1\n    remove: [0]\n"), model)
    assert model.get_layer("conv1").filters == 32
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


# -- verify -----------------------------------------------------------------------------------------

def test_verify_refuses_a_rebuild_that_outputs_nan():
    model = models.add_bn_model()
    resolved = plan(build_graph(model), spec_of("  - layer: conv_a\n    remove: [1]\n"))
    rebuilt = emit(model, resolved)
    kernel = rebuilt.get_layer("head").kernel
    kernel.assign(np.full(tuple(kernel.shape), np.nan, "float32"))
    with pytest.raises(VerificationError):
        verify(model, rebuilt, resolved)
