"""Per-channel and elementwise layers: preprocessing layers, adapted Normalization, InceptionResNetV2's
CustomScaleLayer, and the norms taken across channels (approximate, like LayerNormalization)."""

import keras
import numpy as np
import pytest
from keras import layers
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

import reference
from breadth import assert_prunes_exactly, model_of, refusal, spec_of
from compiler.api import apply

KEEP = [0, 2, 3, 5]          # conv_a keeps these of its 6 filters when [1, 4] go


def between(*middle):
    """conv_a (6 filters) -> middle layers -> conv_b (4 filters)."""
    def build(x):
        y = layers.Conv2D(6, 1, name="conv_a")(x)
        for layer in middle:
            y = layer(y)
        return layers.Conv2D(4, 1, name="conv_b")(y)
    return model_of(build, input_shape=(8, 8, 3))


@pytest.mark.parametrize("middle", [
    lambda: layers.Rescaling(0.5, offset=0.25, name="mid"),
    lambda: layers.Resizing(5, 5, name="mid"),
    lambda: layers.CenterCrop(4, 4, name="mid"),
    lambda: layers.RandomFlip(name="mid"),
    lambda: layers.UnitNormalization(axis=(1, 2), name="mid"),      # per channel: exact
], ids=["rescaling", "resizing", "center_crop", "random_flip", "unit_norm_spatial"])
def test_per_channel_layers_pass_channels_through(middle):
    model = between(middle())
    before = model.count_params()
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [1, 4]\n",
                                       {"conv_b": [1, 4]})
    assert rebuilt.count_params() == before - 2 * 4 - 2 * 4


def test_rescaling_with_per_channel_scale_and_offset_slices_its_config():
    scale, offset = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    model = between(layers.Rescaling(scale, offset=offset, name="mid"))
    rebuilt, resolved = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [1, 4]\n",
                                              {"conv_b": [1, 4]})
    mid = rebuilt.get_layer("mid")
    np.testing.assert_allclose(mid.scale, np.array(scale)[KEEP])
    np.testing.assert_allclose(mid.offset, np.array(offset)[KEEP])


def test_adapted_normalization_slices_its_mean_and_variance():
    model = between(layers.Normalization(name="mid"))
    weights = {v.name: v.numpy() for v in model.get_layer("mid").weights}
    mean, variance = weights["mean"], weights["variance"]
    assert mean.shape == (6,) and not np.allclose(mean, 0)       # randomized like an adapted one
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [1, 4]\n",
                                       {"conv_b": [1, 4]})
    new = {v.name: v.numpy() for v in rebuilt.get_layer("mid").weights}
    np.testing.assert_array_equal(new["mean"], mean[KEEP])
    np.testing.assert_array_equal(new["variance"], variance[KEEP])


def test_normalization_given_mean_and_variance_slices_its_config():
    mean, variance = [0.1, -0.2, 0.3, -0.4, 0.5, -0.6], [1.0, 2.0, 0.5, 1.5, 2.5, 3.0]
    model = between(layers.Normalization(mean=mean, variance=variance, name="mid"))
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [1, 4]\n",
                                       {"conv_b": [1, 4]})
    config = rebuilt.get_layer("mid").get_config()
    np.testing.assert_allclose(config["mean"], np.array(mean)[KEEP])
    np.testing.assert_allclose(config["variance"], np.array(variance)[KEEP])


def test_normalization_over_another_axis_is_refused():
    model = between(layers.Normalization(axis=(1, 3), name="mid"))
    assert "at 'mid' (Normalization): it normalizes axis" in refusal(
        model, "  - layer: conv_a\n    remove: [1]\n")


def test_custom_scale_layer_couples_its_two_inputs():
    def build(x):
        a = layers.Conv2D(6, 1, name="conv_a")(x)
        b = layers.Conv2D(6, 3, padding="same", name="conv_b")(x)
        y = CustomScaleLayer(0.17, name="scaled")([a, b])
        return layers.Conv2D(4, 1, name="conv_c")(layers.ReLU(name="relu")(y))
    model = model_of(build)
    rebuilt, resolved = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [1, 4]\n",
                                              {"conv_c": [1, 4]})
    (group,) = resolved.groups
    assert {m.layer: m.removed for m in group.members} == {"conv_a": (1, 4), "conv_b": (1, 4)}
    assert group.coupled_by == ("scaled",)
    assert rebuilt.get_layer("conv_b").filters == 4


@pytest.mark.parametrize("norm", ["unit", "rms"])
def test_norms_across_channels_are_refused_unless_exact_false(norm):
    layer = (layers.UnitNormalization(name="mid") if norm == "unit"
             else layers.RMSNormalization(epsilon=1e-3, name="mid"))
    keras.utils.set_random_seed(0)
    x = keras.Input((5,), name="features")
    y = layers.Dense(3, name="fc_b")(layer(layers.Dense(6, name="fc_a")(x)))
    model = keras.Model(x, layers.Dense(2, name="head")(y))
    if norm == "rms":
        model.get_layer("mid").scale.assign(np.linspace(0.5, 1.5, 6).astype("float32"))
    assert "its norm is taken across channels, so removal is not exact" in refusal(
        model, "  - layer: fc_a\n    remove: [1, 4]\n")
    rebuilt, resolved, difference = apply(
        spec_of("  - layer: fc_a\n    remove: [1, 4]\n    exact: false\n"), model)
    assert difference is None and resolved.approximate
    assert resolved.params == (model.count_params(), rebuilt.count_params())
    # what the approximate model computes, by hand: the norm over the four kept channels
    data = reference.random_inputs(model)
    k_a, b_a = model.get_layer("fc_a").get_weights()
    k_b, b_b = model.get_layer("fc_b").get_weights()
    k_h, b_h = model.get_layer("head").get_weights()
    h = data @ k_a[:, KEEP] + b_a[KEEP]
    if norm == "unit":
        h = h / np.sqrt(np.maximum((h * h).sum(-1, keepdims=True), 1e-12))
    else:
        scale = model.get_layer("mid").scale.numpy()
        h = h / np.sqrt((h * h).mean(-1, keepdims=True) + 1e-3) * scale[KEEP]
    expected = (h @ k_b[KEEP] + b_b) @ k_h + b_h
    np.testing.assert_allclose(rebuilt(data).numpy(), expected, rtol=1e-4, atol=1e-5)
