"""Stage 3: resolve a spec's rules against a model graph into an inert, printable ``Plan``.

Each rule picks layers (name glob, class, exclusions), then channel *groups* of the unit it names
(the layers' outputs by default, or a block such as an attention layer's ``heads``): the
listed indices (``remove``/``keep``), or the lowest-magnitude groups (``fraction``/``count``; the
magnitudes come from ``scores.py``).
Criterion rules choose within each *coupled set* (channels tied by merges), so "25% of every conv"
means 25% of each set, not of the whole model. Every group decided by two rules must be decided
the same way, or the plan is refused naming both rules.

The ``Plan`` records, per layer, the config keys that change and the kept positions along every
weight axis that shrinks, weights named by their path in the layer: ``emit`` needs nothing else.
This module decides which groups go; ``changes.py`` turns the decision into those records.
"""

from __future__ import annotations

import difflib
import fnmatch
import glob
from dataclasses import dataclass

import keras
import networkx as nx
import numpy as np

from .balance import Choice, choose, reason
from .changes import (GroupChange, LayerChange, Member, check_nothing_emptied, group_changes,
                      implied, layer_changes, model_inputs, reads, writes)
from .errors import CompilerError, ConstraintError
from .graph import ModelGraph, unit_word
from .hub import rebuild_note
from .rules import OUTPUTS, rule_for, weight_paths
from .spec import Spec, SpecRule

__all__ = ["Plan", "LayerChange", "GroupChange", "Member", "plan"]


@dataclass(frozen=True)
class Plan:
    spec_path: str
    model_name: str
    layers: tuple[LayerChange, ...]          # every layer with weights or a changed shape, in order
    groups: tuple[GroupChange, ...]
    notes: tuple[str, ...]                   # what criterion rules skipped, and why
    # nested models whose inputs lose channels: (path, input shapes after), for emit
    model_inputs: tuple[tuple[str, tuple[tuple, ...]], ...] = ()
    # calls whose inputs lose channels: (call key, ((input index, kept positions, width), ...)),
    # so that verification can zero exactly those channels where the original reads them
    reads: tuple[tuple[str, tuple[tuple[int, tuple[int, ...], int], ...]], ...] = ()
    # one line per spec rule whose explicit list coupling widened ("<where>: <what>"); the CLI
    # prints them on stderr, and the notes repeat them
    warnings: tuple[str, ...] = ()
    criteria: tuple[str, ...] = ()           # the criteria that ranked channels
    data_sha256: str | None = None           # the data a data criterion read (data.py)
    budget: dict | None = None               # a spec target and where it landed (budget.py)
    # calls whose first output loses channels: (call key, its kept positions), so that a failed
    # verification can name the first layer whose kept outputs differ
    writes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def params(self) -> tuple[int, int]:
        return (sum(c.params[0] for c in self.layers), sum(c.params[1] for c in self.layers))

    @property
    def flops(self) -> tuple[int, int]:
        return (sum(c.flops[0] for c in self.layers), sum(c.flops[1] for c in self.layers))

    @property
    def approximate(self) -> bool:
        return any(group.approximate for group in self.groups)

    def changes(self) -> list[LayerChange]:
        return [change for change in self.layers if change.changed]


def plan(graph: ModelGraph, spec: Spec, scorer=None) -> Plan:
    """Resolve every rule of ``spec`` on ``graph``; raise ConstraintError if it cannot be done.

    ``scorer(graph, criterion)`` gives root-indexed scores (``criteria.Scorer``, which reads the
    data of data criteria); by default only the criteria that need no data are available.
    """
    return _Planner(graph, spec, scorer).run()


class _Planner:
    def __init__(self, graph: ModelGraph, spec: Spec, scorer=None):
        from .criteria import Scorer
        self.graph = graph
        self.spec = spec
        self.scorer = scorer if scorer is not None else Scorer()
        n = graph.num_ids
        # per group root (arrays, not per-root objects: a ConvNeXt has 30k roots, and allocating
        # an object each wakes Python's cyclic GC over the whole Keras heap)
        self.state = np.full(n, -1, dtype=np.int8)          # -1 undecided, 0 kept, 1 removed
        self.first_rule = np.full(n, -1, dtype=np.int64)    # index in spec.rules of the first decider
        self.touched: dict[int, np.ndarray] = {}            # rule number -> roots it decided
        self.approximate_roots: set[int] = set()
        self.notes: list[str] = []
        self._noted: set[str] = set()
        self._scores: dict[str, np.ndarray] = {}
        self._widened: dict[int, list[str]] = {}            # rule number -> widening messages

    # -- selecting layers -----------------------------------------------------------------------
    def _targets(self, rule: SpecRule) -> list[str]:
        """Paths the rule selects that have its unit; naming one that lacks it is an error."""
        paths = list(self.graph.units)
        chosen, lacking = [], []
        for path in paths:
            op = self.graph.layers.get(path)
            if rule.layer is not None and not self._selects(rule.layer, path):
                continue
            if rule.type is not None and rule.type not in {c.__name__ for c in type(op).__mro__}:
                continue
            if any(self._selects(pattern, path) for pattern in rule.exclude):
                continue
            (chosen if rule.unit in self.graph.units[path] else lacking).append(path)
        if not chosen and lacking and not rule.optional:
            raise self._no_unit(rule, lacking)
        if not chosen and not rule.optional:
            raise self._no_match(rule, paths)
        return chosen

    def _no_unit(self, rule: SpecRule, lacking: list[str]) -> ConstraintError:
        path = lacking[0]
        units = ", ".join(sorted(self.graph.units[path]))
        many = f" (and {len(lacking) - 1} more selected layers)" if len(lacking) > 1 else ""
        return ConstraintError(
            f"{rule.label()}: '{path}' ({self._describe_layer(path)}){many} has no unit "
            f"'{rule.unit}'", rule.location("unit"), f"its units: {units}")

    def _selects(self, pattern: str, path: str) -> bool:
        """A glob selects the paths it matches, but the name of a layer (``a[1]?``) only itself."""
        if pattern in self.graph.units:
            return path == pattern
        return fnmatch.fnmatchcase(path, pattern)

    def _no_match(self, rule: SpecRule, paths: list[str]) -> ConstraintError:
        if rule.layer is not None:
            names = difflib.get_close_matches(rule.layer, paths, n=3, cutoff=0.5)
            hint = ("closest: " + ", ".join(f"'{glob.escape(n)}'" for n in names)) if names else \
                f"layers are {', '.join(repr(p) for p in paths[:8])}{' ...' if len(paths) > 8 else ''}"
            what = "matches" if any(ch in rule.layer for ch in "*?[") else "is named"
            message = f"{rule.label()}: no layer {what} '{rule.layer}'"
        else:
            types = sorted({c.__name__ for op in self.graph.layers.values()
                            for c in type(op).__mro__})
            close = [] if hasattr(keras.layers, rule.type) else \
                [t for t in types if t.lower() == rule.type.lower()] or \
                difflib.get_close_matches(rule.type, types, n=1, cutoff=0.6)
            present = sorted({type(op).__name__ for op in self.graph.layers.values()})
            hint = f"closest: '{close[0]}'; types are case-sensitive Keras class names" if close \
                else (f"types here: {', '.join(present[:8])}{' ...' if len(present) > 8 else ''}; "
                      "add 'optional: true' if the rule may match nothing")
            message = f"{rule.label()}: no layer of type '{rule.type}'"
        if rule.type is not None and rule.layer is not None:
            message += f" of type '{rule.type}'"
        return ConstraintError(message, rule.location("layer" if rule.layer else "type"), hint)

    # -- deciding groups ------------------------------------------------------------------------
    def _decide(self, rule: SpecRule, roots: np.ndarray, removed: np.ndarray) -> None:
        decided = removed.astype(np.int8)
        state = self.state[roots]
        touched = self.touched.setdefault(rule.number, np.zeros(self.graph.num_ids, dtype=bool))
        clash = np.flatnonzero((state >= 0) & (state != decided))
        if len(clash):
            r = int(roots[clash[0]])
            other = self.spec.rules[int(self.first_rule[r])]
            channel = self.graph.describe_id(r)
            why = self.graph.coupled_by.get(r)
            coupled = f" (coupled by {', '.join(repr(k) for k in why)})" if why else ""
            if touched[r]:
                raise ConstraintError(
                    f"{rule.label()} gives different channels to one coupled group{coupled}",
                    rule.where, "give coupled layers the same channels, or one rule for the group")
            remover, keeper = (rule, other) if decided[clash[0]] else (other, rule)
            listed = " (a remove list keeps every channel it does not list)" \
                if keeper.remove is not None else ""
            raise ConstraintError(
                f"{rule.label()} conflicts with {other.label()} on {channel}{coupled}: rule "
                f"{remover.number} removes it, rule {keeper.number} keeps it{listed}", rule.where,
                "merge the rules on one layer into one rule, or 'exclude' the layer from one of "
                "them; coupled layers need the same channels")
        fresh = roots[state < 0]
        self.state[fresh] = decided[state < 0]
        self.first_rule[fresh] = rule.number - 1
        touched[roots] = True

    def _check_removable(self, rule: SpecRule, path: str, ids: np.ndarray, field_name: str) -> None:
        """Raise unless every group of ``ids`` (channels of ``path`` a rule removes) may go."""
        roots, first = np.unique(self.graph.root[ids], return_index=True)
        for r, channel in zip(roots.tolist(), ids[first].tolist()):
            fix = self.graph.fixed.get(r)
            if fix is None:
                continue
            if fix.approximate and not rule.exact:
                self.approximate_roots.add(r)
                continue
            route = ""
            try:
                hops = nx.shortest_path(self.graph.graph, path, fix.key)
                if len(hops) > 1:
                    route = f" (path: {' -> '.join(hops)})"
            except (nx.NetworkXNoPath, nx.NodeNotFound):
                pass
            why = self.graph.coupled_by.get(r)
            coupled = f" (coupled by {', '.join(repr(k) for k in why)})" if why else ""
            raise ConstraintError(
                f"{rule.label()}: cannot remove {self.graph.describe_id(channel)}{coupled}: "
                f"{self._why(fix)}{route}",
                rule.location(field_name), None)

    def _why(self, fix) -> str:
        """The fix's reason, led by the layer that stops the removal unless the reason names it."""
        if f"'{fix.key}'" in fix.reason:
            return fix.reason
        call = self.graph.graph.nodes[fix.key].get("call") if fix.key in self.graph.graph else None
        kind = f" ({call.class_name})" if call is not None else ""
        return f"at '{fix.key}'{kind}: {fix.reason}"

    def _explicit(self, rule: SpecRule, path: str) -> None:
        field_name = "remove" if rule.remove is not None else "keep"
        indices = rule.remove if rule.remove is not None else rule.keep
        for layout in self._unit_layouts(rule, path):
            size = len(layout)
            for item, index in enumerate(indices):
                if index >= size:
                    raise ConstraintError(
                        f"{rule.label()}: index {index} is out of range for '{path}' "
                        f"({self._describe_layer(path)}, {size} {self._unit_words(rule)})",
                        rule.location(field_name, item), f"valid range 0..{size - 1}")
            roots = self.graph.root[layout.ids]
            listed = np.unique(roots[list(indices)])
            removed = np.isin(roots, listed) if rule.remove is not None else ~np.isin(roots, listed)
            if removed.all():
                raise ConstraintError(
                    f"{rule.label()}: removes every {unit_word(rule.unit)} of '{path}' ({size} of {size})",
                    rule.location(field_name), "keep at least one channel")
            self._check_removable(rule, path, layout.ids[removed], field_name)
            self._decide(rule, roots, removed)
            widened = self._widening(rule, path, layout, roots, removed, len(set(indices)))
            if widened:
                self._note(widened)
                self._widened.setdefault(rule.number, []).append(widened)

    def _widening(self, rule: SpecRule, path: str, layout, roots: np.ndarray, removed: np.ndarray,
                  listed: int) -> str | None:
        """What an explicit list removes of its own layer beyond what it listed, and why (None if
        nothing more). The same channels of a coupled partner -- a residual ``Add``'s other branch --
        are what coupling always means, shown in the plan's groups, and not warned about."""
        if rule.keep is not None:
            kept = int((~removed).sum())
            if kept <= listed:
                return None
            return (f"{rule.label()}: listed {listed} {self._plural(listed)} of '{path}' to keep, "
                    f"keeps {kept}, because {self._because(path, layout, roots[~removed], kept)}")
        gone = np.unique(roots[removed])
        members = np.flatnonzero(np.isin(self.graph.root, gone))
        positions = int(removed.sum())
        if positions <= listed:      # the same channels of a coupled partner (an Add) are expected
            return None
        parts = [f"{positions} of '{path}'"]
        counts: dict[str, int] = {}
        for space in self.graph.space_of(members).tolist():
            owner = self.graph.spaces[space].owner
            if owner != path:
                counts[owner] = counts.get(owner, 0) + 1
        parts += [f"{n} of '{owner}'" for owner, n in counts.items()]
        removes = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        return (f"{rule.label()}: listed {listed} {self._plural(listed)} of '{path}', removes "
                f"{removes}, because {self._because(path, layout, roots[removed], positions)}")

    def _because(self, path: str, layout, roots: np.ndarray, positions: int) -> str:
        reasons = []
        coupled = [key for r in np.unique(roots).tolist() for key in self.graph.coupled_by.get(r, ())]
        if coupled:
            names = list(dict.fromkeys(coupled))
            reasons.append(f"{', '.join(repr(k) for k in names)} couple{'s' if len(names) == 1 else ''} "
                           "channels into groups that go together")
        distinct = len(np.unique(layout.ids[np.isin(self.graph.root[layout.ids], roots)]))
        if positions > distinct:
            reasons.append(f"'{path}' repeats each channel it reads (a depth multiplier)")
        return " and ".join(reasons) or "its channels are coupled"

    @staticmethod
    def _plural(n: int) -> str:
        return "channel" if n == 1 else "channels"

    def _criterion_scores(self, rule: SpecRule) -> np.ndarray:
        """Root-indexed scores of ``rule.criterion``; a scorer's error names the rule."""
        if rule.criterion not in self._scores:
            try:
                self._scores[rule.criterion] = self.scorer(self.graph, rule.criterion)
            except CompilerError as error:
                if error.where is not None:
                    raise
                raise type(error)(f"{rule.label()}: {error.message}",
                                  rule.location("criterion"), error.hint) from None
        return self._scores[rule.criterion]

    def _candidates(self, rule: SpecRule, paths: list[str]):
        """Coupled set -> the roots ``rule`` may rank there (in order of appearance), and the
        path each root was selected at."""
        if rule.unit != OUTPUTS and rule.criterion not in ("l1", "l2"):
            raise ConstraintError(f"{rule.label()}: criterion '{rule.criterion}' ranks output "
                                  f"channels, not {rule.unit}", rule.location("criterion"),
                                  "use l1 or l2 for a unit")
        candidates: dict[int, dict[int, None]] = {}   # coupled set -> roots, in order of appearance
        where_of: dict[int, str] = {}
        skipped: dict[str, str] = {}                  # path -> why (the first reason) it lost nothing
        for path in paths:
            for layout in self._unit_layouts(rule, path):
                roots = self.graph.root[layout.ids]
                _, first = np.unique(roots, return_index=True)
                stopped: set[int] = set()       # id() of the fixes already noted for this layer
                for r in roots[np.sort(first)].tolist():
                    fix = self.graph.fixed.get(r)
                    if fix is not None and not (fix.approximate and not rule.exact):
                        if id(fix) not in stopped:
                            stopped.add(id(fix))
                            self._skip(rule, path, self._why(fix), skipped)
                        continue
                    if fix is not None:
                        self.approximate_roots.add(r)
                    members = candidates.setdefault(int(self.graph.coupled_set[r]), {})
                    if r not in members:
                        members[r] = None
                        where_of[r] = path
        frozen = self._frozen_layers(np.fromiter(
            (r for members in candidates.values() for r in members), dtype=np.int64))
        if frozen:
            names = ", ".join(f"'{path}'" for path in frozen[:3]) + \
                (f" and {len(frozen) - 3} more" if len(frozen) > 3 else "")
            self._note(f"{rule.label()}: criterion {rule.criterion} ranks channels by trainable "
                       f"weights only; it ignores the frozen (non-trainable) weights of {names}, "
                       "which its removals also slice")
        return candidates, where_of, skipped

    def _by_criterion(self, rule: SpecRule, paths: list[str]) -> None:
        scores = self._criterion_scores(rule)
        candidates, where_of, skipped = self._candidates(rule, paths)
        choices, wheres = [], []
        for members in candidates.values():
            roots = np.fromiter(members, dtype=np.int64, count=len(members))
            size, where = len(roots), where_of[int(roots[0])]
            self._check_scored(rule, scores[roots], where)
            what = self._counted(rule, where, size)
            if rule.count is not None and rule.count >= size:
                raise ConstraintError(
                    f"{rule.label()}: count {rule.count} would remove every {unit_word(rule.unit)} "
                    f"of '{where}' ({size} {what})", rule.location("count"),
                    f"valid range 1..{size - 1}")
            keep = rule.kept(size)
            if keep == size:        # the rule selected this set but removes nothing: say why
                self._skip(rule, where, rule.why_nothing(size, what), skipped)
            order = np.argsort(scores[roots], kind="stable")    # ties: order of appearance
            choices.append(Choice(roots[order], scores[roots][order], size - keep,
                                  lambda n, size=size: rule.rounded(size, size - n) == size - n))
            wheres.append(where)
        masks, adjusted = choose(self.graph, self.state == 1, choices,
                                 self._later[rule.number - 1] & (self.state < 0))
        for choice, mask in zip(choices, masks):
            self._decide(rule, choice.roots, mask)
        for i, (amount, balances) in adjusted.items():       # balances steered the amount
            why = reason(wheres[i], choices[i].remove, amount, len(choices[i].roots), balances)
            if amount == 0:
                self._skip(rule, wheres[i], why, skipped)
            else:
                self._note(f"{rule.label()}: {why}")
        if rule.optional or rule.type is not None or any(ch in rule.layer for ch in "*?["):
            return
        for path in paths:          # a layer named explicitly must lose something, or say why not
            ids = np.concatenate([layout.ids for layout in self._unit_layouts(rule, path)])
            if not (self.state[self.graph.root[ids]] == 1).any():
                raise ConstraintError(
                    f"{rule.label()}: removes nothing from '{path}': "
                    f"{skipped.get(path, 'no channel of it was chosen')}",
                    rule.location("fraction" if rule.fraction is not None else "count"),
                    "add 'optional: true' if the rule may remove nothing")

    def _check_scored(self, rule: SpecRule, scores: np.ndarray, where: str) -> None:
        if np.isnan(scores).any():
            raise ConstraintError(f"{rule.label()}: criterion '{rule.criterion}' has no score for "
                                  f"'{where}' (no BatchNormalization follows it)",
                                  rule.location("criterion"),
                                  "use another criterion for this layer, or 'exclude' it")

    def _counted(self, rule: SpecRule, path: str, groups: int) -> str:
        """What a criterion counts at ``path``: its channels, or (when coupling ties several of
        them together, as a grouped conv does) the groups they form."""
        channels = sum(len(layout) for layout in self._unit_layouts(rule, path))
        if channels == groups:
            return "channels"
        return f"channel groups of {channels // groups}" if channels % groups == 0 else \
            "channel groups"

    def _skip(self, rule: SpecRule, path: str, why: str, skipped: dict[str, str]) -> None:
        skipped.setdefault(path, why)
        self._note(f"{rule.label()}: left '{path}' alone: {why}")

    def _frozen_layers(self, roots: np.ndarray) -> list[str]:
        """Frozen layers (``trainable = False``) with a declared weight axis over these groups."""
        if not hasattr(self, "_frozen"):
            self._frozen = []
            for path, calls in self.graph.calls_by_path.items():
                op, rule = calls[0].op, rule_for(calls[0].op)
                if rule is None or getattr(op, "trainable", True) or not getattr(op, "weights", ()):
                    continue
                weights = weight_paths(op)
                ids = [layout.ids for name, axes in rule.weight_axes(calls[0]).items()
                       if name in weights for layout in axes.values() if layout is not None]
                if ids:
                    self._frozen.append((path, np.unique(self.graph.root[np.concatenate(ids)])))
        return [path for path, mine in self._frozen if np.isin(mine, roots).any()]

    def _note(self, note: str) -> None:
        if note not in self._noted:
            self._noted.add(note)
            self.notes.append(note)

    def _unit_layouts(self, rule: SpecRule, path: str) -> list:
        return self.graph.units[path][rule.unit]

    @staticmethod
    def _unit_words(rule: SpecRule) -> str:
        return "channels" if rule.unit == OUTPUTS else rule.unit

    def _describe_layer(self, path: str) -> str:
        return type(self.graph.layers.get(path)).__name__

    # -- the plan -------------------------------------------------------------------------------
    def run(self) -> Plan:
        budgeted = []        # rules without an amount of their own: the spec's target ranks them
        self._later = self._later_rules_decide()
        for rule in self.spec.rules:
            paths = self._targets(rule)
            if rule.remove is not None or rule.keep is not None:
                for path in paths:
                    self._explicit(rule, path)
            elif rule.fraction is None and rule.count is None:
                budgeted.append((rule, paths))
            elif paths:
                self._by_criterion(rule, paths)
        budget = None
        if getattr(self.spec, "target", None):
            from .budget import meet_target
            budget = meet_target(self, budgeted)
        removed = implied(self.graph, self.state[self.graph.root] == 1, self._blame)
        check_nothing_emptied(self.graph, removed, self._blame)
        layers = layer_changes(self.graph, removed, self._blame)
        note = rebuild_note(self.graph.model, {c.path: c for c in layers if c.changed})
        if note is not None and any(c.changed for c in layers):
            self._note(note)
        used = tuple(c for c in getattr(self.scorer, "used", ()) if c in self._scores)
        fingerprint = getattr(self.scorer, "data_fingerprint", None)
        if fingerprint:
            self._note(f"channels ranked by {', '.join(used)} on data sha256:{fingerprint[:16]} "
                       f"({len(self.scorer.data)} samples)")
        groups = group_changes(self.graph, removed, self.touched, self.approximate_roots)
        return Plan(self.spec.path, self.graph.model.name, layers, groups, tuple(self.notes),
                    model_inputs(self.graph, removed), reads(self.graph, removed),
                    self._warnings(), used, fingerprint, budget, writes(self.graph, removed))

    def _later_rules_decide(self) -> list[np.ndarray]:
        """Per rule, the groups (root-indexed) some later rule selects: a balance they touch
        is left for those rules to even out, not steered early (``balance.choose``)."""
        masks = [np.zeros(self.graph.num_ids, dtype=bool)]
        for rule in reversed(self.spec.rules[1:]):
            mask = masks[-1].copy()
            try:
                paths = self._targets(rule)
            except ConstraintError:         # raised in its turn, by ``run``
                paths = []
            for path in paths:
                for layout in self._unit_layouts(rule, path):
                    mask[self.graph.root[layout.ids]] = True
            masks.append(mask)
        return masks[::-1]

    def _blame(self, ids: np.ndarray) -> SpecRule | None:
        """The earliest spec rule that decided any of these channel ids, if one did."""
        deciders = self.first_rule[self.graph.root[ids]] if len(ids) else self.first_rule[:0]
        deciders = deciders[deciders >= 0]
        return self.spec.rules[int(deciders.min())] if len(deciders) else None

    def _warnings(self) -> tuple[str, ...]:
        lines = []
        for rule in self.spec.rules:
            messages = self._widened.get(rule.number)
            if messages:
                more = len(messages) - 1
                field_name = "remove" if rule.remove is not None else "keep"
                lines.append(f"{rule.location(field_name)}: {messages[0]}" +
                             (f" (and {more} more selected layer{'s' if more > 1 else ''})"
                              if more else ""))
        return tuple(lines)

