"""Per-channel layers: output channel ``c`` is a function of input channel ``c`` alone.

Activations, pooling (local and global), dropout and noise, padding, cropping, upsampling and
friends never mix channels, so their output layout *is* their input layout and a removed channel
simply does not exist on either side. Two exceptions are checked here: a softmax over the channel
axis mixes every channel (refused), and layers in ``channels_first`` format keep channels on axis 1
(refused as unsupported). Two per-channel layers carry a weight indexed by the channel:

* ``PReLU``: ``alpha`` has the input's shape less the shared axes; its last axis is the channel
  axis (size 1 when the channel axis is shared, and then nothing is sliced).
* ConvNeXt's ``LayerScale`` (``keras.applications.convnext``): ``y_c = x_c * gamma_c`` with an
  *unnamed* ``gamma (C,)`` (Keras names it ``variable_N``, a process-wide counter, so the rule
  finds its path through the layer's ``gamma`` attribute) and ``projection_dim = C`` in its config.
"""

from __future__ import annotations

import keras

from ..compat import LayerScale
from ..layout import Layout
from .base import Call, Kept, Rule, activation_reason, includes_channel_axis, register, weight_paths

__all__ = ["PassThroughRule", "SoftmaxRule", "PReLURule", "LayerScaleRule"]

L = keras.layers

PASS_THROUGH = (
    L.Activation, L.ReLU, L.LeakyReLU, L.ELU,
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
    L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
    L.GaussianDropout, L.GaussianNoise, L.AlphaDropout, L.ActivityRegularization,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D,
    L.Cropping1D, L.Cropping2D, L.Cropping3D,
    L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
    L.Identity, L.RepeatVector,
)


@register(*PASS_THROUGH)
class PassThroughRule(Rule):
    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        reason = None
        if getattr(call.op, "data_format", "channels_last") != "channels_last" and len(call.input_shapes[0]) > 2:
            reason = f"data_format='{call.op.data_format}' is not supported (only channels_last)"
        else:
            reason = activation_reason(call.op)
        if reason:
            return ctx.stop(call, reason)
        return [call.inputs[0]]


@register(L.Softmax)
class SoftmaxRule(Rule):
    """Softmax over the channel axis mixes channels; over any other axis it passes them."""

    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        if includes_channel_axis(call, call.op.axis):
            return ctx.stop(call, "softmax over the channel axis mixes channels")
        return [call.inputs[0]]


@register(L.PReLU)
class PReLURule(Rule):
    """``alpha`` has the input's shape less the shared axes; its last axis is the channel axis."""

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        return [call.inputs[0]]

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        if call.inputs[0] is None or call.op.alpha.shape[-1] == 1:
            return {}
        return {"alpha": {-1: call.inputs[0]}}


@register(LayerScale)
class LayerScaleRule(Rule):
    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        return [call.inputs[0]]

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        if call.inputs[0] is None:
            return {}
        gamma = next(path for path, v in weight_paths(call.op).items() if v is call.op.gamma)
        return {gamma: {0: call.inputs[0]}}

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        return {"projection_dim": kept.outputs[0]}
