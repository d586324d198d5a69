"""Flatten and Reshape: where channel positions move but channels survive.

* ``Flatten`` of ``(batch, *positions, C)`` yields index ``p * C + c`` (channels innermost, in both
  data formats once Keras has moved channels last), so its layout is the input's tiled
  ``prod(positions)`` times and a removed channel drops out of every position at once.
* ``Reshape`` that keeps the last axis (``(C,) -> (1, 1, C)`` in squeeze-excite blocks, or any
  reshape of the positions) keeps the layout; its ``target_shape`` gets the kept count. A Reshape to
  one flat axis behaves like Flatten. Anything else moves channels across axes: refused.
* ``Permute`` keeps the layout when the last axis stays last.
* A channel shuffle -- Reshape ``(..., C) -> (..., g, C/g)``, Permute of the last two axes, Reshape
  back -- spreads the channels over two axes for a while: see ``shuffle.py``.
"""

from __future__ import annotations

from math import prod

import keras

from ..layout import Layout
from .base import Call, Kept, Rule, register
from .shuffle import Grid

__all__ = ["FlattenRule", "ReshapeRule", "PermuteRule"]


def _positions(shape: tuple) -> int | None:
    dims = shape[1:-1]
    return None if any(d is None for d in dims) else int(prod(dims))


@register(keras.layers.Flatten)
class FlattenRule(Rule):
    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        shape = call.input_shapes[0]
        layout = call.inputs[0]
        if len(shape) <= 2:
            return [layout]
        positions = _positions(shape)
        if layout is None or positions is None:
            return [ctx.opaque(call, call.output_shapes[0], "unknown flattened size")]
        return [layout.tile(positions)]


@register(keras.layers.Reshape)
class ReshapeRule(Rule):
    accepts_grids = True

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        in_shape, out_shape = call.input_shapes[0], call.output_shapes[0]
        layout = call.inputs[0]
        if isinstance(layout, Grid):
            if tuple(out_shape) == tuple(in_shape):
                return [layout]
            if tuple(out_shape[:-1]) == tuple(in_shape[:-2]) and out_shape[-1] == len(layout.ids):
                return [layout.merged()]
            return ctx.stop(call, f"Reshape {tuple(in_shape[1:])} -> {tuple(out_shape[1:])} does "
                            "not undo the channel shuffle's split of the channel axis")
        if layout is not None and len(out_shape) == len(in_shape) + 1 and \
                tuple(out_shape[:-2]) == tuple(in_shape[:-1]) and \
                None not in out_shape[-2:] and out_shape[-2] * out_shape[-1] == len(layout):
            grid = Grid(layout.ids.reshape(out_shape[-2], out_shape[-1]), 0, call.key)
            ctx.couple(call, [Layout(row) for row in grid.matrix])   # see shuffle.py
            return [grid]
        if layout is not None and in_shape[-1] == out_shape[-1]:
            return [layout]
        positions = _positions(in_shape)
        if layout is not None and len(out_shape) == 2 and positions is not None:
            return [layout.tile(positions)]
        reason = f"Reshape {tuple(in_shape[1:])} -> {tuple(out_shape[1:])} moves channels across axes"
        return ctx.stop(call, reason)

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        target = list(config["target_shape"])
        if target[-1] != -1:
            target[-1] = kept.outputs[0]
        return {"target_shape": tuple(target)}


@register(keras.layers.Permute)
class PermuteRule(Rule):
    couples_calls = False
    accepts_grids = True

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        rank = len(call.input_shapes[0])
        dims = tuple(call.op.dims)
        if isinstance(call.inputs[0], Grid):
            if dims[-2:] == (rank - 1, rank - 2):
                return [call.inputs[0].transposed()]
            if dims[-2:] == (rank - 2, rank - 1):
                return [call.inputs[0]]
            return ctx.stop(call, f"Permute{dims} moves the channel shuffle's axes elsewhere")
        if dims[-1] == rank - 1:
            return [call.inputs[0]]
        reason = f"Permute{tuple(call.op.dims)} moves the channel axis"
        return ctx.stop(call, reason)
