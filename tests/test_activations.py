"""Activations: an allow-list of elementwise ones passes channels; anything else fixes them at plan
time, with the reason (not a verification failure after the fact)."""

import keras
import pytest
from keras import layers

from breadth import assert_prunes_exactly, model_of, refusal


def _activation_model(activation, as_layer: bool):
    def build(x):
        y = layers.Conv2D(6, 1, name="conv_a", activation=None if as_layer else activation)(x)
        if as_layer:
            y = layers.Activation(activation, name="act")(y)
        return layers.Conv2D(4, 1, name="conv_b")(y)
    return model_of(build)


@pytest.mark.parametrize("name", ["gelu", "mish", "hard_silu", "swish", "leaky_relu", "selu"])
@pytest.mark.parametrize("as_layer", [True, False])
def test_elementwise_activations_pass_channels_through(name, as_layer):
    model = _activation_model(name, as_layer)
    before = model.count_params()
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [1, 4]\n",
                                       {"conv_b": [1, 4]})
    # conv_a loses 2 filters (3 weights + 1 bias each), conv_b 2 input rows (4 weights each)
    assert rebuilt.count_params() == before - 2 * 4 - 2 * 4


@pytest.mark.parametrize("name, why", [
    ("sparsemax", "mixes channels"), ("softmax", "mixes channels"),
    ("glu", "mixes channels"),
])
def test_channel_mixing_activation_layer_is_refused_at_plan_time(name, why):
    model = _activation_model(name, as_layer=True) if name != "glu" else model_of(
        lambda x: layers.Conv2D(4, 1, name="conv_b")(
            layers.Activation("glu", name="act")(layers.Conv2D(6, 1, name="conv_a")(x))))
    text = refusal(model, "  - layer: conv_a\n    remove: [1]\n")
    assert text.endswith(f"cannot remove channel 1 of 'conv_a': at 'act' (Activation): its "
                         f"activation '{name}' {why} (path: conv_a -> act)")


def my_squash(x):
    return x / (1.0 + keras.ops.sum(keras.ops.abs(x), axis=-1, keepdims=True))


@pytest.mark.parametrize("as_layer", [True, False])
def test_custom_callable_activation_is_refused_with_a_reason(as_layer):
    model = _activation_model(my_squash, as_layer)
    text = refusal(model, "  - layer: conv_a\n    remove: [1]\n")
    assert "its activation 'my_squash' is not known to act channel by channel" in text


def test_dense_with_sparsemax_activation_fixes_its_own_outputs():
    model = model_of(lambda x: layers.Dense(3, name="fc_b")(
        layers.Dense(6, activation="sparsemax", name="fc_a")(x)), input_shape=(5,))
    text = refusal(model, "  - layer: fc_a\n    remove: [0]\n")
    assert text.endswith("cannot remove channel 0 of 'fc_a': at 'fc_a' (Dense): its activation "
                         "'sparsemax' mixes channels")
