"""Flatten, Reshape and axis permutations: where channel positions move but channels survive.

* ``Flatten`` of ``(batch, *positions, C)`` yields index ``p * C + c`` (channels innermost, in both
  data formats once Keras has moved channels last), so its layout is the input's tiled
  ``prod(positions)`` times and a removed channel drops out of every position at once.
* ``Reshape`` that keeps the last axis (``(C,) -> (1, 1, C)`` in squeeze-excite blocks, or any
  reshape of the positions) keeps the layout; its ``target_shape`` gets the kept count. A Reshape to
  one flat axis behaves like Flatten. Anything else moves channels across axes: refused.
* ``Permute`` keeps the layout when the last axis stays last.
* A channel shuffle -- Reshape ``(..., C) -> (..., g, C/g)``, Permute of the last two axes, Reshape
  back -- spreads the channels over two axes for a while: see ``shuffle.py``.

The raw ``keras.ops`` forms follow the same rules: ``ops.reshape(x, newshape)`` (and
``x.reshape``) is a Reshape whose ``newshape`` also names the batch axis (``-1``, or a fixed
size); its last entry gets the kept count unless it is ``-1``, so a shuffle's group count ``g``
stays. ``ops.transpose(x, axes)``, ``ops.swapaxes`` and ``ops.moveaxis`` are permutations of the
axes, batch included: they keep a layout when the last axis stays last, and transpose a shuffle's
grid when they swap its two axes; they have no argument that depends on the channel count.
(``ops.reshape(x, ops.shape(x)[:-1] + (g, n))`` bakes the symbolic batch size ``None`` into
``newshape``, which Keras cannot run: it is refused by Keras itself before prunec sees it.)
"""

from __future__ import annotations

from math import prod

import keras
import numpy as np

from ..compat import ops_numpy as knp
from ..layout import Layout
from .base import Call, Kept, Rule, register
from .shuffle import Grid

__all__ = ["FlattenRule", "ReshapeRule", "PermuteRule", "ReshapeOpRule", "TransposeOpRule"]


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


def reshaped(call: Call, ctx, what: str) -> list[Layout | None]:
    """The layout after a reshape from ``call``'s input shape to its output shape (``what`` names
    the reshape in a refusal): the same, tiled (flattened), a shuffle's grid, or merged back."""
    in_shape, out_shape = call.input_shapes[0], call.output_shapes[0]
    layout = call.inputs[0]
    if isinstance(layout, Grid):
        if tuple(out_shape) == tuple(in_shape):
            return [layout]
        if tuple(out_shape[:-1]) == tuple(in_shape[:-2]) and out_shape[-1] == len(layout.ids):
            return [layout.merged()]
        return ctx.stop(call, f"{what} {tuple(in_shape[1:])} -> {tuple(out_shape[1:])} does "
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
    if layout is not None and len(out_shape) == 2 and positions is not None and \
            out_shape[-1] == positions * len(layout):
        return [layout.tile(positions)]
    reason = f"{what} {tuple(in_shape[1:])} -> {tuple(out_shape[1:])} moves channels across axes"
    return ctx.stop(call, reason)


def _last_kept(shape, kept: Kept) -> tuple:
    """``shape`` with its last entry the kept count, unless it is ``-1`` (inferred)."""
    shape = list(shape)
    if shape[-1] != -1:
        shape[-1] = kept.outputs[0]
    return tuple(shape)


@register(keras.layers.Reshape)
class ReshapeRule(Rule):
    accepts_grids = True

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        return reshaped(call, ctx, "Reshape")

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        return {"target_shape": _last_kept(config["target_shape"], kept)}


@register(knp.Reshape)
class ReshapeOpRule(Rule):
    """``ops.reshape(x, newshape)``: ``newshape`` is the op's config, batch axis included."""

    couples_calls = False
    accepts_grids = True

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        newshape = call.op.newshape
        if not isinstance(newshape, (tuple, list)) or \
                not all(isinstance(d, (int, np.integer)) for d in newshape):
            return ctx.stop(call, "its new shape is not a constant tuple of integers")
        sample = call.input_shapes[0][1:]
        keeps_channels = call.output_shapes[0][-1] == sample[-1] and len(call.output_shapes[0]) > 1
        if not keeps_channels and (None in sample or any(d < 1 for d in newshape[1:]) or
                                   prod(newshape[1:]) != prod(sample)):
            return ctx.stop(call, f"ops.reshape to {tuple(int(d) for d in newshape)} does not keep "
                            f"each sample's {int(prod(sample)) if None not in sample else '?'} "
                            "values apart (its first entry must be the batch)")
        return reshaped(call, ctx, "ops.reshape")

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        return {"newshape": _last_kept([int(d) for d in config["newshape"]], kept)}


def permuted(call: Call, ctx, perm: tuple[int, ...], what: str) -> list[Layout | None]:
    """The layout after output axis ``i`` becomes input axis ``perm[i]`` (batch included)."""
    rank = len(perm)
    layout = call.inputs[0]
    if isinstance(layout, Grid):
        if perm[-2:] == (rank - 1, rank - 2):
            return [layout.transposed()]
        if perm[-2:] == (rank - 2, rank - 1):
            return [layout]
        return ctx.stop(call, f"{what} moves the channel shuffle's axes elsewhere")
    if perm[-1] == rank - 1:
        return [layout]
    return ctx.stop(call, f"{what} moves the channel axis")


@register(keras.layers.Permute)
class PermuteRule(Rule):
    couples_calls = False
    accepts_grids = True

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        dims = tuple(call.op.dims)
        return permuted(call, ctx, (0,) + dims, f"Permute{dims}")


def _axis_order(call: Call) -> tuple[int, ...]:
    """The input axis each output axis of a raw transpose, swapaxes or moveaxis comes from."""
    rank = len(call.input_shapes[0])
    op = call.op
    if isinstance(op, knp.Transpose):
        axes = op.axes
        return tuple(reversed(range(rank))) if axes is None else tuple(int(a) % rank for a in axes)
    if isinstance(op, knp.Swapaxes):
        order = list(range(rank))
        a, b = int(op.axis1) % rank, int(op.axis2) % rank
        order[a], order[b] = order[b], order[a]
        return tuple(order)
    source = [int(a) % rank for a in (op.source if isinstance(op.source, (list, tuple))
                                      else [op.source])]
    destination = [int(a) % rank for a in (op.destination if isinstance(
        op.destination, (list, tuple)) else [op.destination])]
    order = [n for n in range(rank) if n not in source]     # numpy's own moveaxis
    for dest, src in sorted(zip(destination, source)):
        order.insert(dest, src)
    return tuple(order)


@register(knp.Transpose, knp.Swapaxes, knp.Moveaxis)
class TransposeOpRule(Rule):
    """``ops.transpose``, ``ops.swapaxes``, ``ops.moveaxis``: a permutation of the axes."""

    couples_calls = False
    accepts_grids = True

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        order = _axis_order(call)
        return permuted(call, ctx, order, f"{type(call.op).__name__.lower()} to axes {order}")
