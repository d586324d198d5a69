"""Convolutions: Conv1D/2D/3D, their transposes, depthwise and separable convolutions.

Weight layouts in Keras 3 (channels_last; channels_first is refused as unsupported):

* ``Conv{1,2,3}D``: ``kernel (*k, in/groups, filters)``, ``bias (filters,)``. With ``groups == 1``
  output filter ``j`` is column ``kernel[..., j]``; input channel ``i`` is ``kernel[..., i, :]``.
  With ``groups == in`` (a depthwise conv written as a grouped Conv, as ConvNeXt does) every input
  channel ``c`` owns outputs ``c*m ... c*m+m-1`` (``m = filters / in``): channels pass through, and
  ``filters`` and ``groups`` both shrink. With ``1 < groups < in`` group ``g`` reads inputs
  ``g*a ... g*a+a-1`` (``a = in / groups``) into outputs ``g*b ... g*b+b-1`` (``b = filters /
  groups``) through ``kernel[..., :, g*b:(g+1)*b]``; Keras needs every group the same size, so a
  removal takes whole groups: those ``a`` inputs and ``b`` outputs are coupled into one group, and
  removing it deletes ``b`` kernel columns and biases (the kernel's ``in/groups`` axis keeps its size).
* ``Conv{1,2,3}DTranspose``: ``kernel (*k, filters, in)`` — output axis *before* input axis.
* ``DepthwiseConv{1,2}D``: ``kernel (*k, in, m)``, ``bias (in*m,)``; output ``c*m + k`` belongs to
  input channel ``c``, so the layout is the input's repeated ``m`` times.
* ``SeparableConv{1,2}D``: ``depthwise_kernel (*k, in, m)`` then ``pointwise_kernel (1.., in*m,
  filters)``, ``bias (filters,)``: the depthwise part follows its input, the pointwise part is a
  producer like a Conv.
"""

from __future__ import annotations

from math import prod

import numpy as np

from ..compat import BaseConv, BaseConvTranspose, BaseDepthwiseConv, BaseSeparableConv
from ..layout import Layout
from .base import Call, Kept, Rule, activation_reason, produce, register, spatial_positions

__all__ = ["ConvRule", "ConvTransposeRule", "DepthwiseConvRule", "SeparableConvRule"]


def _unsupported_format(call: Call, ctx) -> list[Layout | None] | None:
    if getattr(call.op, "data_format", "channels_last") != "channels_last":
        reason = f"data_format='{call.op.data_format}' is not supported (only channels_last)"
        return ctx.stop(call, reason)
    return None


def _own_activation(call: Call, ctx, layout: Layout) -> list[Layout | None]:
    """A channel-wise conv passes channels on, unless its own activation mixes them."""
    reason = activation_reason(call.op)
    if reason:
        ctx.fix(call, [layout], reason)
    return [layout]


@register(BaseConv)
class ConvRule(Rule):

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        refused = _unsupported_format(call, ctx)
        if refused:
            return refused
        groups = call.op.groups
        if groups == 1:
            return produce(call, ctx, call.op.filters)
        layout = call.inputs[0]
        if layout is None:
            reason = f"grouped convolution (groups={groups}) with an unknown input channel count"
            return [ctx.opaque(call, call.output_shapes[0], reason)]
        if groups == len(layout):
            return _own_activation(call, ctx, layout.repeat(call.op.filters // groups))
        (out,) = produce(call, ctx, call.op.filters)
        per_in, per_out = len(layout) // groups, call.op.filters // groups
        for g in range(groups):
            members = Layout.concat([Layout(layout.ids[g * per_in:(g + 1) * per_in]),
                                     Layout(out.ids[g * per_out:(g + 1) * per_out])])
            ctx.couple(call, [members, Layout(np.repeat(members.ids[:1], len(members)))])
        return [out]

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        out = call.outputs[0]
        if out is None:
            return {}
        kernel = {-1: out}
        if call.op.groups == 1 and call.inputs[0] is not None:
            kernel[-2] = call.inputs[0]
        return {"kernel": kernel, "bias": {0: out}}

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        if call.op.groups > 1:
            per_group = call.op.filters // call.op.groups
            return {"filters": kept.outputs[0], "groups": kept.outputs[0] // per_group}
        return {"filters": kept.outputs[0]}

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        return prod(weight_shapes["kernel"]) * spatial_positions(call.output_shapes[0])


@register(BaseConvTranspose)
class ConvTransposeRule(Rule):

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

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        return {"filters": kept.outputs[0]}

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        return prod(weight_shapes["kernel"]) * spatial_positions(call.input_shapes[0])


@register(BaseDepthwiseConv)
class DepthwiseConvRule(Rule):
    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        refused = _unsupported_format(call, ctx)
        if refused:
            return refused
        layout = call.inputs[0]
        if layout is None:
            return [None]
        return _own_activation(call, ctx, layout.repeat(call.op.depth_multiplier))

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        if call.inputs[0] is None:
            return {}
        return {"kernel": {-2: call.inputs[0]}, "bias": {0: call.outputs[0]}}

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        return prod(weight_shapes["kernel"]) * spatial_positions(call.output_shapes[0])


@register(BaseSeparableConv)
class SeparableConvRule(Rule):

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

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        return {"filters": kept.outputs[0]}

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        positions = spatial_positions(call.output_shapes[0])
        return (prod(weight_shapes["depthwise_kernel"]) + prod(weight_shapes["pointwise_kernel"])) * positions
