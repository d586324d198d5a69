"""Dense and Embedding: layers that read every input channel into new output channels.

Dense on a tensor of any rank acts on the last axis: ``y[..., j] = sum_i x[..., i] K[i, j] + b[j]``
with ``kernel`` of shape ``(in, units)`` and ``bias`` of shape ``(units,)``. Removing output unit
``j`` deletes column ``K[:, j]`` and ``b[j]``; removing input channel ``i`` deletes row ``K[i, :]``,
which is exactly the same as feeding zero on channel ``i`` (the correctness law).

Embedding maps integer ids to rows of ``embeddings`` ``(input_dim, output_dim)``; its output
dimension is a channel axis: removing channel ``j`` deletes column ``embeddings[:, j]``.
"""

from __future__ import annotations

import keras

from ..layout import Layout
from .base import Call, Kept, Rule, produce, register, spatial_positions

__all__ = ["DenseRule", "EmbeddingRule"]


@register(keras.layers.Dense)
class DenseRule(Rule):

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        return produce(call, ctx, call.op.units)

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        axes = {"kernel": {1: call.outputs[0]}, "bias": {0: call.outputs[0]}}
        if call.inputs[0] is not None:
            axes["kernel"][0] = call.inputs[0]
        return axes

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        return {"units": kept.outputs[0]}

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        in_dim, units = weight_shapes["kernel"]
        return in_dim * units * spatial_positions(call.output_shapes[0])


@register(keras.layers.Embedding)
class EmbeddingRule(Rule):
    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        return [ctx.fresh(call, call.op.output_dim)]

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        return {"embeddings": {1: call.outputs[0]}}

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        return {"output_dim": kept.outputs[0]}
