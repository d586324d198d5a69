"""A user's own layer, and the one call that teaches prunec what it does with channels.

``ChannelScale`` multiplies each channel by its own learned factor: ``y[..., c] = x[..., c] *
scale[c]``. Output channel ``c`` depends on input channel ``c`` alone, and ``scale`` is indexed by
the channel on its last axis: that is all prunec needs to prune *through* it.
"""

import keras

from compiler.api import register_rule


@keras.saving.register_keras_serializable(package="my_layers")
class ChannelScale(keras.layers.Layer):
    """``y[..., c] = x[..., c] * scale[c]``; ``scale`` is created from the input's width."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


register_rule(ChannelScale, "per_channel", weights={"scale": -1})
