"""Convolutions: Conv1D/2D/3D, their transposes, depthwise and separable convolutions.

Weight layouts in Keras 3 (channels_last; channels_first is refused as unsupported):

* ``Conv{1,2,3}D``: ``kernel (*k, in/groups, filters)``, ``bias (filters,)``. With ``groups == 1``
  output filter ``j`` is column ``kernel[..., j]``; input channel ``i`` is ``kernel[..., i, :]``.
  With ``groups == in`` (a depthwise conv written as a grouped Conv, as ConvNeXt does) every input
  channel ``c`` owns outputs ``c*m ... c*m+m-1`` (``m = filters / in``): channels pass through, and
  ``filters`` and ``groups`` both shrink. Other group counts are refused (removal would have to
  take whole groups).
* ``Conv{1,2,3}DTranspose``: ``kernel (*k, filters, in)`` — output axis *before* input axis.
* ``DepthwiseConv{1,2}D``: ``kernel (*k, in, m)``, ``bias (in*m,)``; output ``c*m + k`` belongs to
  input channel ``c``, so the layout is the input's repeated ``m`` times.
* ``SeparableConv{1,2}D``: ``depthwise_kernel (*k, in, m)`` then ``pointwise_kernel (1.., in*m,
  filters)``, ``bias (filters,)``: the depthwise part follows its input, the pointwise part is a
  producer like a Conv.
"""

from __future__ import annotations

from math import prod

from keras.src.layers.convolutional.base_conv import BaseConv
from keras.src.layers.convolutional.base_conv_transpose import BaseConvTranspose
from keras.src.layers.convolutional.base_depthwise_conv import BaseDepthwiseConv
from keras.src.layers.convolutional.base_separable_conv import BaseSeparableConv

from ..layout import Layout
from .base import Call, Rule, produce, register, spatial_positions

__all__ = ["ConvRule", "ConvTransposeRule", "DepthwiseConvRule", "SeparableConvRule"]


def _unsupported_format(call: Call, ctx) -> list[Layout | None] | None:
    if getattr(call.op, "data_format", "channels_last") != "channels_last":
        reason = f"data_format='{call.op.data_format}' is not supported (only channels_last)"
        ctx.fix(call, call.inputs, reason)
        return [ctx.opaque(call, call.output_shapes[0], reason)]
    return None


@register(BaseConv)
class ConvRule(Rule):
    mixes_channels = True

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        refused = _unsupported_format(call, ctx)
        if refused:
            return refused
        groups = call.op.groups
        if groups == 1:
            return produce(call, ctx, call.op.filters)
        layout = call.inputs[0]
        if layout is not None and groups == len(layout) and call.op.filters % groups == 0:
            return [layout.repeat(call.op.filters // groups)]
        reason = f"grouped convolution (groups={groups}): channels could only go in whole groups"
        ctx.fix(call, call.inputs, reason)
        return [ctx.opaque(call, call.output_shapes[0], reason)]

    def _is_depthwise(self, call: Call) -> bool:
        return call.op.groups > 1 and call.inputs[0] is not None and call.op.groups == len(call.inputs[0])

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        out = call.outputs[0]
        if out is None:
            return {}
        kernel = {-1: out}
        if call.op.groups == 1 and call.inputs[0] is not None:
            kernel[-2] = call.inputs[0]
        return {"kernel": kernel, "bias": {0: out}}

    def config_changes(self, call: Call, config: dict, kept_outputs: list[int]) -> dict:
        if self._is_depthwise(call):
            multiplier = call.op.filters // call.op.groups
            return {"filters": kept_outputs[0], "groups": kept_outputs[0] // multiplier}
        return {"filters": kept_outputs[0]}

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        return prod(weight_shapes["kernel"]) * spatial_positions(call.output_shapes[0])


@register(BaseConvTranspose)
class ConvTransposeRule(Rule):
    mixes_channels = True

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        refused = _unsupported_format(call, ctx)
        if refused:
            return refused
        return produce(call, ctx, call.op.filters)

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        kernel = {-2: call.outputs[0]}
        if call.inputs[0] is not None:
            kernel[-1] = call.inputs[0]
        return {"kernel": kernel, "bias": {0: call.outputs[0]}}

    def config_changes(self, call: Call, config: dict, kept_outputs: list[int]) -> dict:
        return {"filters": kept_outputs[0]}

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        return prod(weight_shapes["kernel"]) * spatial_positions(call.input_shapes[0])


@register(BaseDepthwiseConv)
class DepthwiseConvRule(Rule):
    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        refused = _unsupported_format(call, ctx)
        if refused:
            return refused
        layout = call.inputs[0]
        return [layout.repeat(call.op.depth_multiplier) if layout is not None else None]

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        if call.inputs[0] is None:
            return {}
        return {"kernel": {-2: call.inputs[0]}, "bias": {0: call.outputs[0]}}

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        return prod(weight_shapes["kernel"]) * spatial_positions(call.output_shapes[0])


@register(BaseSeparableConv)
class SeparableConvRule(Rule):
    mixes_channels = True

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        refused = _unsupported_format(call, ctx)
        if refused:
            return refused
        return produce(call, ctx, call.op.filters)

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        out = call.outputs[0]
        axes = {"pointwise_kernel": {-1: out}, "bias": {0: out}}
        layout = call.inputs[0]
        if layout is not None:
            axes["depthwise_kernel"] = {-2: layout}
            axes["pointwise_kernel"][-2] = layout.repeat(call.op.depth_multiplier)
        return axes

    def config_changes(self, call: Call, config: dict, kept_outputs: list[int]) -> dict:
        return {"filters": kept_outputs[0]}

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        positions = spatial_positions(call.output_shapes[0])
        return (prod(weight_shapes["depthwise_kernel"]) + prod(weight_shapes["pointwise_kernel"])) * positions
