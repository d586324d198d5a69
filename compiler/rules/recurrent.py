"""Recurrent layers: a unit is a channel the layer produces, repeated once per gate block.

A cell with ``G`` gate blocks and ``u`` units (LSTM ``G = 4``: i, f, c, o; GRU ``G = 3``: z, r, h;
SimpleRNN ``G = 1``) holds, in the order Keras stores them:

* ``kernel (in, G*u)`` (ConvLSTM: ``(*k, in, G*f)``): column ``g*u + j`` is gate ``g`` of unit ``j``;
* ``recurrent_kernel (u, G*u)`` (ConvLSTM: ``(*k, f, G*f)``): row ``i`` is how every gate reads unit
  ``i``'s previous state, column ``g*u + j`` as above;
* ``bias (G*u,)``, or ``(2, G*u)`` for a GRU with ``reset_after`` (input and recurrent biases).

So the last axis of all three is the unit layout repeated per block, ``Layout.concat([units] * G)``,
and removing unit ``j`` deletes its ``G`` columns everywhere, its ``recurrent_kernel`` row and the
input rows of whatever reads the layer's outputs. The remaining units compute exactly what they
computed when unit ``j`` was still there but nobody read it: its only route into them is the
``recurrent_kernel`` row, and its only route out of the layer is the readers' rows (the law).
A recurrent layer reads its input through ``kernel`` rows (axis ``-2``), like a Dense.

Every output (the sequence or last output, and with ``return_state`` the states: LSTM ``h, c``)
carries the unit layout. States passed as ``initial_state`` are added to the layer's own state
channel by channel, so their producers' channels are coupled with the layer's units.
``stateful=True`` layers keep the unit count in their state variables and stop a removal.

``Bidirectional`` owns two blocks, one per direction (``bi/forward_lstm``, ``bi/backward_lstm``):
``merge_mode="concat"`` outputs forward units then backward units; ``sum``/``ave``/``mul`` couple
forward unit ``i`` with backward unit ``i``; ``None`` outputs both. Keras' ``Bidirectional`` infers a
concatenated width of twice the forward units, so in concat mode both directions must keep the same
count: a balance criterion rules choose within, and ``check`` refuses explicit lists that break. ``TimeDistributed`` is its inner layer's rule applied per time step (weights under
the inner layer's name, config changes inside its serialized ``layer``). ``Masking`` passes channels
through; Keras records the mask it hands the next layer as ``any(x != v, axis=-1)`` ops, which
read a removed (zero) channel as "no information" when ``v = 0`` (exact); for another ``v`` a
removal behind it is approximate (``exact: false``).
"""

from __future__ import annotations

from math import prod

import keras

from ..compat import ops_numpy as knp
from ..layout import Layout
from .base import (Call, Kept, Rule, includes_channel_axis, is_channel_axis, register, rule_for,
                   weight_paths)

__all__ = ["RecurrentRule", "BidirectionalRule", "TimeDistributedRule", "MaskingRule", "NotEqualRule",
           "AnyRule"]

L = keras.layers
CONV_LSTM = (L.ConvLSTM1D, L.ConvLSTM2D, L.ConvLSTM3D)
_GATES = ((L.LSTMCell, 4), (L.GRUCell, 3), (L.SimpleRNNCell, 1))
_STATES = ("initial_state", "1")
_MASKS = ("mask", "2")


# -- one recurrent layer (LSTM, GRU, SimpleRNN, RNN(cell), ConvLSTM*D) ----------------------------
def _gates(layer) -> int | None:
    """Gate blocks of ``layer``'s cell, or None when prunec does not know the cell."""
    if isinstance(layer, CONV_LSTM):
        return 4
    cell = getattr(layer, "cell", None)
    return next((gates for cls, gates in _GATES if isinstance(cell, cls)), None)


def _size(layer) -> int:
    return layer.cell.filters if isinstance(layer, CONV_LSTM) else layer.cell.units


def _refusal(layer) -> str | None:
    """Why prunec cannot remove units of ``layer``, or None."""
    if not isinstance(layer, L.RNN):
        return f"prunec has no rule for {type(layer).__name__}"
    if _gates(layer) is None:
        return f"prunec has no rule for its cell {type(getattr(layer, 'cell', None)).__name__}"
    if layer.stateful:
        return "it is stateful (stateful=True): its state variables hold one entry per unit"
    if isinstance(layer, CONV_LSTM) and layer.cell.data_format != "channels_last":
        return f"data_format='{layer.cell.data_format}' is not supported (only channels_last)"
    return None


def _layer_axes(layer, units: Layout, inputs: Layout | None) -> dict[int, dict[int, Layout]]:
    """``id(variable) -> {axis: layout}`` for one recurrent layer's cell."""
    gated = Layout.concat([units] * _gates(layer))
    cell = layer.cell
    axes = {id(cell.kernel): {-1: gated}, id(cell.recurrent_kernel): {-2: units, -1: gated}}
    if inputs is not None:
        axes[id(cell.kernel)][-2] = inputs
    if getattr(cell, "bias", None) is not None:
        axes[id(cell.bias)] = {-1: gated}
    return axes


def _by_path(outer, axes: dict[int, dict]) -> dict[str, dict]:
    """Re-key ``id(variable) -> value`` by the variables' paths relative to ``outer``."""
    return {path: axes[id(v)] for path, v in weight_paths(outer).items() if id(v) in axes}


def _size_changes(layer, config: dict, kept: int) -> dict:
    """The config keys of ``layer`` (as ``config``) that give it ``kept`` units."""
    if "cell" in config:                      # keras.layers.RNN(cell): the cell holds the count
        return {"cell": {"units": kept}}
    return {"filters" if isinstance(layer, CONV_LSTM) else "units": kept}


def _steps(shape: tuple) -> int:
    """Time steps of a ``(batch, time, ...)`` input, 1 when unknown."""
    return int(shape[1]) if len(shape) > 2 and shape[1] is not None else 1


def _layer_macs(layer, call: Call, shapes: dict[str, tuple], prefix: str = "") -> int:
    """Per time step: the input kernel and the recurrent kernel, at every output position."""
    paths = {id(v): p for p, v in weight_paths(layer).items()}
    cell = layer.cell
    per_step = sum(prod(shapes[prefix + paths[id(v)]])
                   for v in (cell.kernel, cell.recurrent_kernel) if prefix + paths[id(v)] in shapes)
    positions = 1
    if isinstance(layer, CONV_LSTM):
        out = call.output_shapes[0]
        dims = out[2:-1] if layer.return_sequences else out[1:-1]
        positions = 1 if any(d is None for d in dims) else int(prod(dims))
    return per_step * positions * _steps(call.input_shapes[0])


def _unknown_input(call: Call) -> str | None:
    """Why the inputs cannot be told apart (sequence, initial states, mask), or None."""
    known = ("0", "sequences") + _STATES + _MASKS
    if len(call.inputs) > 1 and any(name not in known for name in call.input_names):
        return "it cannot tell its sequence, initial states and mask apart"
    return None


def _inputs(call: Call, ctx, states_to: list[Layout]) -> Layout | None:
    """The sequence's layout; couples ``initial_state`` with ``states_to`` (split evenly), fixes masks."""
    states = [layout for layout, name in zip(call.inputs, call.input_names) if name in _STATES]
    masks = [layout for layout, name in zip(call.inputs, call.input_names) if name in _MASKS]
    ctx.fix(call, masks, "it is a mask, not channels")
    per_target = max(1, len(states) // len(states_to))      # Bidirectional: forward's first
    for i, state in enumerate(states):
        if state is not None:
            ctx.couple(call, [states_to[min(i // per_target, len(states_to) - 1)], state])
    return call.input("0", "sequences")


@register(L.RNN)
class RecurrentRule(Rule):
    """LSTM, GRU, SimpleRNN, ConvLSTM1D/2D/3D, and ``keras.layers.RNN`` around their cells."""
    reads_own_outputs = True       # a unit's output is read again by the recurrence

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        reason = _refusal(call.op) or _unknown_input(call)
        if reason:
            return ctx.stop(call, reason)
        units = ctx.fresh(call, _size(call.op))
        _inputs(call, ctx, [units])
        return [units] * len(call.output_shapes)

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        if _refusal(call.op) or call.outputs[0] is None:
            return {}
        return _by_path(call.op, _layer_axes(call.op, call.outputs[0], call.input("0", "sequences")))

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        return _size_changes(call.op, config, kept.outputs[0])

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        return 0 if _gates(call.op) is None else _layer_macs(call.op, call, weight_shapes)


# -- Bidirectional ---------------------------------------------------------------------------------
def _directions(call: Call) -> tuple:
    return call.op.forward_layer, call.op.backward_layer


@register(L.Bidirectional)
class BidirectionalRule(Rule):
    reads_own_outputs = True       # a unit's output is read again by the recurrence


    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        for direction in _directions(call):
            reason = _refusal(direction)
            if reason:
                return ctx.stop(call, f"{reason} (its layer '{direction.name}')")
        if _unknown_input(call):
            return ctx.stop(call, _unknown_input(call))
        forward, backward = (ctx.fresh(call, _size(d), sublayer=d.name) for d in _directions(call))
        _inputs(call, ctx, [forward, backward])
        mode = call.op.merge_mode
        if mode == "concat":                   # Keras needs both directions equally wide
            ctx.balance(call, [forward, backward], "concatenated directions")
            merged = [Layout.concat([forward, backward])]
        elif mode is None:
            merged = [forward, backward]
        else:                                  # sum, ave, mul: unit i of both is one channel
            ctx.couple(call, [forward, backward])
            merged = [forward]
        states = (len(call.output_shapes) - len(merged)) // 2
        return merged + [forward] * states + [backward] * states

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        if any(_refusal(d) for d in _directions(call)):
            return {}
        sequence = call.input("0", "sequences")
        axes: dict[int, dict] = {}
        for direction in _directions(call):
            units = call.units.get(direction.name)
            if units is not None:
                axes.update(_layer_axes(direction, units, sequence))
        return _by_path(call.op, axes)

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        changes = {}     # both directions, always: their input width may have changed
        for key, direction in zip(("layer", "backward_layer"), _directions(call)):
            inner = config.get(key, {}).get("config", {})
            changes[key] = _size_changes(direction, inner, kept.units[direction.name])
        return changes

    def check(self, call: Call, kept: Kept) -> str | None:
        forward, backward = (kept.units.get(d.name) for d in _directions(call))
        if call.op.merge_mode == "concat" and forward != backward:
            return (f"it would keep {forward} forward and {backward} backward units, and Keras' "
                    "Bidirectional concatenates only directions of equal width (remove as many "
                    "units from each direction)")
        return None

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        if any(_gates(d) is None for d in _directions(call)):
            return 0
        total = 0
        for direction in _directions(call):
            relative = {id(v): p for p, v in weight_paths(direction).items()}
            outer = {id(v): p for p, v in weight_paths(call.op).items()}
            prefix = outer[id(direction.cell.kernel)][: -len(relative[id(direction.cell.kernel)])]
            total += _layer_macs(direction, call, weight_shapes, prefix)
        return total


# -- TimeDistributed -------------------------------------------------------------------------------
def _per_step(shape: tuple) -> tuple:
    return (shape[0],) + tuple(shape[2:]) if len(shape) > 1 else shape


def _inner(call: Call) -> Call:
    """The inner layer's call, one time step (time folded into the batch); shares ``units``."""
    return Call(call.key, call.path, call.op.layer, call.index,
                [_per_step(s) for s in call.input_shapes], [_per_step(s) for s in call.output_shapes],
                call.arguments, call.inputs, call.outputs, call.input_names, call.units)


@register(L.TimeDistributed)
class TimeDistributedRule(Rule):


    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        rule = rule_for(call.op.layer)
        if rule is None:
            return ctx.stop(call, f"prunec has no rule for {type(call.op.layer).__name__} "
                                  "inside TimeDistributed")
        return rule.propagate(_inner(call), ctx)

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        rule = rule_for(call.op.layer)
        if rule is None:
            return {}
        inner = weight_paths(call.op.layer)
        axes = rule.weight_axes(_inner(call))
        return _by_path(call.op, {id(inner[p]): a for p, a in axes.items() if p in inner})

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        rule = rule_for(call.op.layer)
        inner = config["layer"].get("config", {})
        changes = {key: value for key, value in
                   rule.config_changes(_inner(call), inner, kept).items() if inner.get(key) != value}
        return {"layer": changes}           # even when empty: its input width may have changed

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        rule = rule_for(call.op.layer)
        if rule is None:
            return 0
        outer = {id(v): p for p, v in weight_paths(call.op).items()}
        shapes = {p: weight_shapes[outer[id(v)]] for p, v in weight_paths(call.op.layer).items()
                  if outer.get(id(v)) in weight_shapes}
        return rule.macs(_inner(call), shapes) * _steps(call.input_shapes[0])


# -- masks -----------------------------------------------------------------------------------------
@register(L.Masking)
class MaskingRule(Rule):
    """``y = where(any(x != v, axis=-1), x, 0)``: with ``v = 0`` a channel read as zero never
    unmasks a step, so a removed channel is exactly an absent one; with another ``v`` it would."""

    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        if call.op.mask_value != 0:
            ctx.fix(call, call.inputs, f"Masking(mask_value={call.op.mask_value}) reads every "
                    "channel to decide which time steps are masked", approximate=True)
        return [call.inputs[0]]


@register(knp.NotEqual)
class NotEqualRule(Rule):
    """The mask Keras records for ``Masking`` and ``Embedding(mask_zero=True)``: ``x != v`` per channel."""

    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        if len(call.inputs) != 1:
            return ctx.stop(call, "it compares two tensors")
        return [call.inputs[0]]


@register(knp.Any)
class AnyRule(Rule):
    """``any(m, axis=-1)`` over channels: a channel read as zero (False) changes nothing, so a
    removed channel is exactly an absent one; the result is a mask per step, not channels."""

    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        if not includes_channel_axis(call, call.op.axis):
            return [call.inputs[0]]
        if is_channel_axis(call, call.op.axis):
            return [ctx.opaque(call, call.output_shapes[0], "it is a mask, not channels")]
        return ctx.stop(call, "it reduces over the channel axis and others")
