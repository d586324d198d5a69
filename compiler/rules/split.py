"""Splits and slices of the channel axis: raw ``keras.ops`` calls whose outputs are ranges of their
input's channels, rebuilt with new arguments.

* ``ops.split(x, n, axis=-1)``: section ``i`` carries positions ``i*C/n ... (i+1)*C/n - 1``, so its
  layout is that range of the input's. Equal sections must stay equal (``n`` is kept): every
  section must lose the same number of channels. They are declared a *balance*, so criterion
  rules choose that way (``balance.py``); an explicit list that does not is refused naming them.
  ``ops.split(x, [i1, i2, ...])`` (explicit indices) is rebuilt at the kept counts' running sums.
* ``x[..., a:b]`` (``GetItem``; any key whose channel entry is a slice of step 1, other axes
  indexed as they like): the layout is ``layout[a:b]``; the rebuilt key is ``a':b'`` with ``a'`` the
  kept positions before ``a`` and ``b' - a'`` the kept ones in ``a:b``.
* ``ops.take(x, indices, axis=-1)`` with constant 1-D ``indices``: the layout is
  ``layout[indices]``; the rebuilt indices are the kept ones, renumbered among the kept positions.
* ``ops.slice(x, start, shape)``: on the channel axis ``[start[-1], start[-1] + shape[-1])`` (to the
  end for ``-1``); the rebuilt ``start[-1]`` counts the kept positions before it, ``shape[-1]``
  the kept ones inside.

A section, slice or selection left with no channel is refused (a zero-width tensor would reach the
next layer). Along any other axis these ops pass channels through unchanged.
"""

from __future__ import annotations

import numpy as np

from ..compat import ops_core as kcore
from ..compat import ops_numpy as knp
from ..layout import Layout
from .base import Call, Kept, Rule, Unsatisfiable, is_channel_axis, register

__all__ = ["SplitRule", "GetItemRule", "TakeRule", "SliceRule"]


def _count_below(positions, bound: int) -> int:
    return int(np.searchsorted(np.asarray(positions, dtype=np.int64), bound))


@register(knp.Split)
class SplitRule(Rule):
    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        layout = call.inputs[0]
        if not is_channel_axis(call, call.op.axis):
            return [layout for _ in call.output_shapes]
        if layout is None:
            return ctx.stop(call, "it splits an unknown number of channels")
        bounds = np.cumsum([0] + [shape[-1] for shape in call.output_shapes])
        sections = [Layout(layout.ids[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        if isinstance(call.op.indices_or_sections, int):
            ctx.balance(call, sections)
        return sections

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        if not is_channel_axis(call, call.op.axis) or call.inputs[0] is None:
            return {}
        counts = kept.outputs
        empty = [i for i, n in enumerate(counts) if n == 0]
        if empty:
            raise Unsatisfiable(f"section {empty[0]} of its split would keep no channel",
                                "keep at least one channel in every section")
        if isinstance(call.op.indices_or_sections, int):
            if len(set(counts)) > 1:
                first = next(i for i, n in enumerate(counts) if n != counts[0])
                raise Unsatisfiable(
                    f"its {len(counts)} equal sections would become unequal (section 0 keeps "
                    f"{counts[0]} channels, section {first} keeps {counts[first]})",
                    "remove the same number of channels from every section")
            return {}
        return {"indices_or_sections": tuple(int(n) for n in np.cumsum(counts[:-1]))}


def _channel_entry(key, rank: int):
    """``(entries, where)``: the key as one entry per input axis, and the index in ``key`` (a
    tuple) of the channel axis' entry, or None when the key leaves it implicit (a full slice)."""
    key = tuple(key) if isinstance(key, (tuple, list)) else (key,)
    if any(entry is None or not isinstance(entry, (slice, int, type(Ellipsis))) for entry in key):
        return None, None
    if Ellipsis in key:
        i = key.index(Ellipsis)
        before, after = list(key[:i]), list(key[i + 1:])
        fill = rank - len(before) - len(after)
        entries = before + [slice(None)] * fill + after
        where = len(key) - 1 if after else None
    else:
        entries = list(key) + [slice(None)] * (rank - len(key))
        where = rank - 1 if len(key) == rank else None
    return (entries if len(entries) == rank else None), where


@register(knp.GetItem)
class GetItemRule(Rule):
    couples_calls = False

    def _channel_slice(self, call: Call):
        rank = len(call.input_shapes[0])
        entries, where = _channel_entry(call.arguments[1], rank) if len(call.arguments) > 1 \
            else (None, None)
        if entries is None:
            return None, None, "its index is not made of slices and integers"
        entry = entries[-1]
        if isinstance(entry, int):
            return None, None, "it picks one channel (the channel axis disappears)"
        if entry.step not in (None, 1):
            return None, None, f"its channel slice has step {entry.step}"
        return entry, where, None

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        layout = call.inputs[0]
        if layout is None or len(call.input_shapes[0]) < 2:
            return ctx.stop(call, "it indexes a tensor without a known channel axis")
        entry, _, reason = self._channel_slice(call)
        if reason:
            return ctx.stop(call, reason)
        start, stop, _ = entry.indices(len(layout))
        return [Layout(layout.ids[start:stop])]

    def argument_changes(self, call: Call, kept: Kept) -> dict:
        entry, where, _ = self._channel_slice(call)
        positions = kept.input_positions[0]
        start, stop, _ = entry.indices(len(call.inputs[0]))
        new_start = _count_below(positions, start)
        new_stop = _count_below(positions, stop)
        if new_stop <= new_start:
            raise Unsatisfiable(f"its channel slice [{start}:{stop}] would keep no channel",
                                "keep at least one channel of the slice")
        if where is None:
            return {}                  # a full slice stays full
        key = list(call.arguments[1])
        key[where] = slice(None if entry.start is None else new_start,
                           None if entry.stop is None else new_stop, entry.step)
        return {1: tuple(key)}


def _constant_indices(call: Call):
    indices = call.arguments[1] if len(call.arguments) > 1 else None
    if indices is None or isinstance(indices, bool):
        return None
    try:
        array = np.asarray(indices)
    except Exception:   # not a constant
        return None
    return array if array.dtype.kind in "iu" and array.ndim == 1 else None


@register(knp.Take)
class TakeRule(Rule):
    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        layout, axis = call.inputs[0], call.op.axis
        if axis is not None and not is_channel_axis(call, axis) and \
                len(call.output_shapes[0]) == len(call.input_shapes[0]):
            return [layout]
        indices = _constant_indices(call)
        if axis is None or layout is None or indices is None:
            return ctx.stop(call, "it takes channels by indices that are not a constant 1-D list")
        return [Layout(layout.ids[indices % len(layout)])]

    def argument_changes(self, call: Call, kept: Kept) -> dict:
        if not is_channel_axis(call, call.op.axis):
            return {}
        width = len(call.inputs[0])
        new_of = {int(p): i for i, p in enumerate(kept.input_positions[0])}
        old = call.arguments[1]
        chosen = [new_of[int(p) % width] for p in np.asarray(old) if int(p) % width in new_of]
        if not chosen:
            raise Unsatisfiable("it would take no channel", "keep at least one taken channel")
        if isinstance(old, np.ndarray):
            return {1: np.asarray(chosen, dtype=old.dtype)}
        return {1: type(old)(chosen) if isinstance(old, (list, tuple)) else chosen}


@register(kcore.Slice)
class SliceRule(Rule):
    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        layout = call.inputs[0]
        start = call.arguments[1] if len(call.arguments) > 1 else None
        if layout is None or start is None or any(s is None for s in np.ravel(start)):
            return ctx.stop(call, "it slices at start indices that are not constant")
        begin, size = int(np.ravel(start)[-1]), int(call.op.shape[-1])
        return [Layout(layout.ids[begin:] if size == -1 else layout.ids[begin:begin + size])]

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        shape = list(config["shape"])
        if kept.outputs[0] == 0:
            raise Unsatisfiable("its channel slice would keep no channel",
                                "keep at least one channel of the slice")
        if shape[-1] != -1:            # -1: to the end, whatever remains
            shape[-1] = kept.outputs[0]
        return {"shape": tuple(shape)}

    def argument_changes(self, call: Call, kept: Kept) -> dict:
        start = list(np.ravel(call.arguments[1]).tolist())
        start[-1] = _count_below(kept.input_positions[0], start[-1])
        old = call.arguments[1]
        return {1: type(old)(start) if isinstance(old, (list, tuple)) else start}
