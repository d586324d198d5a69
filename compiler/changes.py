"""What a decided removal does: per layer, per coupled set, and per call (for verification).

``plan.py`` decides which channel groups go; this module turns that decision -- one boolean per
channel id, ``removed`` -- into the plan's records: ``LayerChange`` (the config keys, weight slices
and raw-op arguments that rebuild a layer), ``GroupChange`` (what one coupled set loses, member by
member), and the calls whose inputs or outputs lose channels, which verification zeroes and
compares. Nothing here chooses channels; a rule that cannot rebuild a layer with what is kept is
reported against the spec rule that removed its channels (``blame``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from .errors import ConstraintError
from .graph import ModelGraph, unit_word
from .rules import OUTPUTS, Call, Kept, rule_for, weight_paths
from .rules.base import Unsatisfiable
from .spec import SpecRule

__all__ = ["LayerChange", "Member", "GroupChange", "Blame", "implied", "check_nothing_emptied",
           "layer_changes", "group_changes", "reads", "writes", "model_inputs"]

# the spec rule to blame for removing any of these channel ids (None if no rule removed one)
Blame = Callable[[np.ndarray], "SpecRule | None"]


@dataclass(frozen=True)
class LayerChange:
    """One layer before and after: shapes, params, FLOPs, and how to rebuild it."""

    path: str
    class_name: str
    output_shape: tuple[tuple, tuple]
    params: tuple[int, int]
    flops: tuple[int, int]
    config: dict = field(default_factory=dict)                  # config keys that change
    slices: dict = field(default_factory=dict)                  # weight path -> {axis: kept positions}
    # a raw op's positional call arguments that change (a slice's key, take's indices), by position
    arguments: dict = field(default_factory=dict)
    # channels are removed inside it (heads, recurrent units), not only at its inputs and outputs
    internal: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.config or self.slices or self.arguments) or \
            self.output_shape[0] != self.output_shape[1]


class Member(NamedTuple):
    """One producer's share of a removal: which of its channels (of which unit) go."""

    layer: str                     # producer path, or producer/sublayer
    removed: tuple[int, ...]
    unit: str = OUTPUTS

    @property
    def label(self) -> str:
        """How plans, drawings and diffs name it: ``fc1``, ``mha (heads)``."""
        return self.layer if self.unit == OUTPUTS else f"{self.layer} ({self.unit})"


@dataclass(frozen=True)
class GroupChange:
    """What one coupled set loses: the removed channels of every member, and what coupled them."""

    number: int
    rules: tuple[int, ...]
    members: tuple[Member, ...]
    coupled_by: tuple[str, ...]
    approximate: bool
    # per member, how many channels its unit had ("removes 2 of 12"): shown in text plans and
    # drawings, not stored in plan or lock files, and not part of what makes two groups equal
    sizes: tuple[int, ...] = field(default=(), compare=False)


# -- the decision, completed and checked ---------------------------------------------------------
def implied(graph: ModelGraph, removed: np.ndarray, blame: Blame) -> np.ndarray:
    """Add the removals a layer's rule implies (a key/value head's query group), or refuse."""
    for calls in graph.calls_by_path.values():
        rule = rule_for(calls[0].op)
        if rule is None or not calls[0].units:
            continue
        extra, refusal = rule.implied(calls[0], removed)
        if refusal is not None:
            message, hint, *about = refusal
            ids = about[0] if about else np.concatenate(
                [layout.ids for layout in calls[0].units.values()])
            spec_rule = blame(ids[removed[ids]])
            label = f"{spec_rule.label()}: " if spec_rule is not None else ""
            raise ConstraintError(label + message, spec_rule.where if spec_rule else None, hint)
        if len(extra):
            removed = removed.copy()
            removed[np.asarray(extra, dtype=np.int64)] = True
    return removed


def check_nothing_emptied(graph: ModelGraph, removed: np.ndarray, blame: Blame) -> None:
    for space in graph.spaces:
        if space.size and removed[space.start: space.start + space.size].all():
            rule = blame(np.arange(space.start, space.start + space.size))
            label, where = (f"{rule.label()}: ", rule.where) if rule is not None else ("", None)
            raise ConstraintError(
                f"{label}removes every {unit_word(space.unit)} of '{space.owner}' "
                f"({space.size} of {space.size}), through its coupled group", where,
                "keep at least one channel")


# -- per layer -----------------------------------------------------------------------------------
def layer_changes(graph: ModelGraph, removed: np.ndarray, blame: Blame) -> tuple[LayerChange, ...]:
    """Every layer with weights or a changed shape, in model order."""
    changes = []
    for path, calls in graph.calls_by_path.items():
        try:
            change = _layer_change(path, calls, removed, blame)
        except Unsatisfiable as error:
            raise _unsatisfiable(calls[0], error, removed, blame) from None
        if change is not None:
            changes.append(change)
    return tuple(changes)


def _layer_change(path: str, calls: list[Call], removed: np.ndarray,
                  blame: Blame) -> LayerChange | None:
    first = calls[0]
    rule = rule_for(first.op)
    shapes = {p: tuple(v.shape) for p, v in weight_paths(first.op).items()}
    params_before = sum(math.prod(s) for s in shapes.values())
    slices, after = {}, dict(shapes)
    for name, axes in (rule.weight_axes(first).items() if rule else ()):
        if name not in shapes:
            continue
        for axis, layout in axes.items():
            kept = layout.kept(removed)
            if len(kept) < len(layout):
                axis = axis % len(shapes[name])
                slices.setdefault(name, {})[axis] = tuple(kept.tolist())
                resized = list(after[name])
                resized[axis] = len(kept)
                after[name] = tuple(resized)
    out_before = first.output_shapes[0] if first.output_shapes else ()
    kept_outputs = [len(l.kept(removed)) if l is not None else None for l in first.outputs]
    out_after = out_before
    if out_before and kept_outputs and kept_outputs[0] is not None:
        out_after = tuple(out_before[:-1]) + (kept_outputs[0],)
    kept_units = {unit: len(layout.kept(removed)) for unit, layout in first.units.items()}
    positions = [tuple(l.kept(removed).tolist()) if l is not None else None
                 for l in first.inputs]
    kept_inputs = [len(p) if p is not None else None for p in positions]
    config, arguments = {}, {}
    shrunk = any(kept_units[unit] < len(layout) for unit, layout in first.units.items())
    if rule is not None and (out_after != out_before or slices or shrunk or
                             any(n is not None and n < len(l)
                                 for n, l in zip(kept_inputs, first.inputs))):
        original = rule.layer_config(first.op)
        kept = Kept(kept_outputs, kept_units, kept_inputs, positions)
        refusal = rule.check(first, kept)
        if refusal:
            raise _unbuildable(first, refusal, removed, blame)
        config = {key: value for key, value in rule.config_changes(
            first, original, kept).items() if original.get(key) != value}
        arguments = {position: value for position, value in rule.argument_changes(
            first, kept).items() if not _same(first.arguments[position], value)}
    flops = (_flops(rule, calls, shapes), _flops(rule, calls, after))
    params = (params_before, sum(math.prod(s) for s in after.values()))
    internal = shrunk or bool(rule and rule.reads_own_outputs and out_after != out_before)
    if params_before or out_after != out_before or config or arguments:
        return LayerChange(path, first.class_name, (out_before, out_after), params,
                           flops, config, slices, arguments, internal)
    return None


def _unsatisfiable(call: Call, error: Unsatisfiable, removed: np.ndarray,
                   blame: Blame) -> ConstraintError:
    """The error for a call whose kept channels cannot be rebuilt, located at the first spec
    rule that removed a channel it reads."""
    gone = [layout.ids[removed[layout.ids]] for layout in call.inputs if layout is not None]
    rule = blame(np.concatenate(gone)) if gone else None
    if rule is None:
        return ConstraintError(f"at '{call.key}' ({call.class_name}): {error.reason}", None,
                              error.hint)
    field_name = next(name for name in ("remove", "keep", "fraction", "count", "layer")
                      if name == "layer" or getattr(rule, name) is not None)
    return ConstraintError(f"{rule.label()}: at '{call.key}' ({call.class_name}): {error.reason}",
                           rule.location(field_name), error.hint)


def _unbuildable(call: Call, reason: str, removed: np.ndarray, blame: Blame) -> ConstraintError:
    """A layer whose kept counts Keras cannot build, blamed on the first rule that removed."""
    layouts = [l for l in [*call.outputs, *call.units.values()] if l is not None]
    ids = np.concatenate([layout.ids for layout in layouts])
    rule = blame(ids[removed[ids]])
    label, where = (f"{rule.label()}: ", rule.where) if rule is not None else ("", None)
    return ConstraintError(f"{label}cannot rebuild '{call.path}' ({call.class_name}): {reason}",
                           where, None)


def _flops(rule, calls: list[Call], shapes: dict) -> int:
    if rule is None:
        return 0
    return sum(2 * rule.macs(call, shapes) for call in calls)


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:      # arrays compare element by element
        return False


# -- per coupled set -----------------------------------------------------------------------------
def group_changes(graph: ModelGraph, removed: np.ndarray, touched: dict[int, np.ndarray],
                  approximate_roots: set[int]) -> tuple[GroupChange, ...]:
    """One ``GroupChange`` per coupled set that loses channels; ``touched`` is rule number ->
    the roots it decided, ``approximate_roots`` the roots removed with ``exact: false``."""
    by_set: dict[int, dict] = {}
    for space in graph.spaces:
        ids = np.arange(space.start, space.start + space.size)
        gone = ids[removed[ids]]
        if not len(gone):
            continue
        roots = graph.root[gone]
        entry = by_set.setdefault(int(graph.coupled_set[roots[0]]),
                                  {"members": [], "sizes": [], "rules": set(), "coupled": [],
                                   "approx": False})
        entry["members"].append(Member(space.owner, tuple((gone - space.start).tolist()),
                                       space.unit))
        entry["sizes"].append(space.size)
        for r in np.unique(roots).tolist():
            entry["rules"].update(n for n, decided in touched.items() if decided[r])
            entry["approx"] |= r in approximate_roots
            for key in graph.coupled_by.get(r, ()):
                if key not in entry["coupled"]:
                    entry["coupled"].append(key)
    return tuple(
        GroupChange(number, tuple(sorted(e["rules"])), tuple(e["members"]), tuple(e["coupled"]),
                    e["approx"], tuple(e["sizes"]))
        for number, e in enumerate(by_set.values(), start=1))


# -- per call, for emit and verification ---------------------------------------------------------
def reads(graph: ModelGraph, removed: np.ndarray) -> tuple:
    """Calls whose inputs lose channels: (call key, ((input index, kept positions, width), ...))."""
    found = []
    for call in graph.calls:
        lost = []
        for index, layout in enumerate(call.inputs):
            if getattr(layout, "spans_axes", False):
                continue        # mid-shuffle: its readers are Reshape/Permute, which mix nothing
            if layout is not None and removed[layout.ids].any():
                lost.append((index, tuple(layout.kept(removed).tolist()), len(layout)))
        if lost:
            found.append((call.key, tuple(lost)))
    return tuple(found)


def writes(graph: ModelGraph, removed: np.ndarray) -> tuple:
    """Calls whose first output loses channels: (call key, its kept positions)."""
    found = []
    for call in graph.calls:
        layout = call.outputs[0] if call.outputs else None
        if layout is not None and not getattr(layout, "spans_axes", False) \
                and removed[layout.ids].any():
            found.append((call.key, tuple(layout.kept(removed).tolist())))
    return tuple(found)


def model_inputs(graph: ModelGraph, removed: np.ndarray) -> tuple[tuple[str, tuple[tuple, ...]], ...]:
    """Nested models whose inputs lose channels: (path, input shapes after)."""
    changed = []
    for path, inputs in graph.nested_inputs.items():
        after = tuple(shape if layout is None else shape[:-1] + (len(layout.kept(removed)),)
                      for shape, layout in inputs)
        if after != tuple(shape for shape, _ in inputs):
            changed.append((path, after))
    return tuple(changed)
