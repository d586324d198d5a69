"""The fuzzer's judge: what a (model, spec) pair must give, and the check that it does.

``expect(facts, spec)`` predicts, from the fuzzer's own facts about the model (never prunec's
graph), whether the spec must compile or be refused, and why. It follows the spec's documented
meaning rule by rule: a rule's layers (name glob, type, exclusions); explicit indices, which decide
every group of each chosen layer's outputs (listed ones removed, the others kept, or the reverse for
``keep``); criterion rules, whose *choice* depends on magnitudes, so the prediction only knows how
many groups of each coupled set they remove. So some refusals are only *possible* (a criterion's
choice may or may not conflict with another rule, or empty a layer); a refusal the spec reaches
whatever the criteria chose is certain, and then compiling is wrong.

``check(...)`` then runs prunec (the Python API, or the command line with files) and asserts:

* a refusal is a ``CompilerError`` (never a ``VerificationError``, never anything else), one line,
  located in the spec file, of a kind the prediction allows, and nothing was written;
* a compiled model removed whole coupled groups, none fixed, the groups the explicit rules named
  (exactly, for explicit-only specs) and the right number per coupled set for criterion rules; each
  producer shrank by its removed channels (an attention layer by its removed heads); it computes
  what the independent reference (``tests/reference.py``: the original with removed channels
  zeroed at every channel-mixing reader, each argument of an attention call apart, and removed
  heads' value projections zeroed) computes; and the plan's params are Keras' ``count_params()``
  of both models.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import keras

import reference
from compiler.api import apply, parse_spec
from compiler.cli import main
from compiler.errors import CompilerError, SpecError, VerificationError
from exactness import assert_params_counted

from .blueprint import OUTPUTS, Built, Facts, owner
from .strategies import spec_text

__all__ = ["Expectation", "expect", "check", "category"]


@dataclass
class Expectation:
    refusals: set = field(default_factory=set)   # refusal kinds that are right for this spec
    compiles: bool = True                         # compiling is right too
    removed: set = field(default_factory=set)     # groups explicit rules remove
    kept: set = field(default_factory=set)        # groups explicit rules keep
    exact: bool = True                            # explicit rules decide every removed group
    # (candidate groups, how many a criterion removes, whether equal split sections may make it
    # fewer: a criterion chooses so that they stay equal, and then may remove less)
    counts: list = field(default_factory=list)

    def allows(self, outcome: str) -> bool:
        return outcome in self.refusals or (outcome == "ok" and self.compiles)


class _Refused(Exception):
    def __init__(self, kind: str):
        self.kind = kind


def _targets(facts: Facts, rule: dict) -> list[str]:
    """The paths a rule selects that have its unit."""
    chosen = []
    for path in facts.calls:
        if not facts.layouts(path, rule.get("unit", OUTPUTS)):
            continue
        if "layer" in rule and not fnmatch.fnmatchcase(path, rule["layer"]):
            continue
        if "type" in rule and rule["type"] not in facts.kinds[path]:
            continue
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in rule.get("exclude", ())):
            continue
        chosen.append(path)
    return chosen


def _kept(rule: dict, size: int) -> int | None:
    """How many of ``size`` candidate groups a criterion rule keeps (the documented arithmetic);
    None when the rule would remove them all."""
    if "count" in rule:
        if rule["count"] >= size:
            return None
        keep = size - rule["count"]
    else:
        keep = size - math.floor(rule["fraction"] * size)
    if "min_keep" in rule:
        keep = max(keep, min(rule["min_keep"], size))
    if "round_to" in rule:
        keep = min(size, math.ceil(keep / rule["round_to"]) * rule["round_to"])
    return keep


def expect(facts: Facts, spec: dict) -> Expectation:
    """What compiling ``spec`` on the model of ``facts`` must give."""
    e = Expectation()
    for rule in spec["prune"]:
        for name in ("remove", "keep"):
            values = rule.get(name, [])
            if any(v < 0 for v in values) or len(set(values)) != len(values):
                e.refusals, e.compiles = {"spec"}, False
                return e
    fixed = facts.fixed_groups()
    component = facts.components()
    balanced = {facts.group(p) for _, equal, sections in facts.sections if equal
                for section in sections for p in section}
    decided: dict = {}           # group -> "removed" | "kept" | "unknown"

    def refuse(kind: str) -> None:
        """prunec stops here if it gets here (an earlier *possible* refusal may come first)."""
        e.refusals.add(kind)
        e.compiles = False
        raise _Refused(kind)

    def decide(group, how: str) -> None:
        before = decided.get(group)
        if before is None or before == how and how != "unknown":
            decided[group] = how
        elif "unknown" in (before, how):
            e.refusals.add("conflict")           # a criterion choice may or may not agree
            if how != "unknown":
                decided[group] = how
        else:
            refuse("conflict")

    try:
        for rule in spec["prune"]:
            unit = rule.get("unit", OUTPUTS)
            paths = _targets(facts, rule)
            if not paths and not rule.get("optional"):
                refuse("no match")
            if "remove" in rule or "keep" in rule:
                indices = rule.get("remove", rule.get("keep"))
                for path in paths:
                    for roots in facts.layouts(path, unit):
                        if max(indices) >= len(roots):
                            refuse("range")
                        listed = {roots[i] for i in indices}
                        gone = [(r in listed) == ("remove" in rule) for r in roots]
                        if all(gone):
                            refuse("all")
                        if any(g and r in fixed for r, g in zip(roots, gone)):
                            refuse("fixed")
                        for r, g in zip(roots, gone):
                            decide(r, "removed" if g else "kept")
                continue
            candidates: dict = {}
            for path in paths:
                for roots in facts.layouts(path, unit):
                    for r in roots:
                        if r not in fixed:
                            candidates.setdefault(component[r], [])
                            if r not in candidates[component[r]]:
                                candidates[component[r]].append(r)
            removing = steered = False
            for groups in candidates.values():
                keep = _kept(rule, len(groups))
                if keep is None:
                    refuse("count")
                removed = len(groups) - keep
                steered |= bool(removed and balanced & set(groups))
                e.counts.append((frozenset(groups), removed, bool(balanced & set(groups))))
                for r in groups:
                    decide(r, "kept" if removed == 0 else "unknown")
                if removed:
                    e.exact = False
                    removing = True
            named = "layer" in rule and not any(ch in rule["layer"] for ch in "*?[")
            if named and steered and not rule.get("optional"):
                e.refusals.add("nothing")          # the sections may leave nothing to remove
            if named and "type" not in rule and not rule.get("optional") and paths and not removing:
                # a layer named explicitly must lose something (this rule or an earlier one)
                states = {decided.get(r) for roots in facts.layouts(paths[0], unit) for r in roots}
                if "unknown" in states:
                    e.refusals.add("nothing")
                elif "removed" not in states:
                    refuse("nothing")
        for ids in facts.owners.values():
            states = {decided.get(facts.find(i)) for i in ids}
            if states == {"removed"}:
                refuse("emptied")
            elif states <= {"removed", "unknown"}:
                e.refusals.add("emptied")
        for _, equal, sections in facts.sections:     # splits and slices checked after emptying
            states = [[decided.get(facts.group(p)) for p in section] for section in sections]
            if any("unknown" in section for section in states):
                e.refusals.add("sections")                # a criterion's choice may break them
                continue
            gone = [sum(state == "removed" for state in section) for section in states]
            if any(n == len(section) for n, section in zip(gone, states)) or \
                    (equal and len(set(gone)) > 1):
                refuse("sections")
    except _Refused:
        return e
    e.removed = {g for g, how in decided.items() if how == "removed"}
    e.kept = {g for g, how in decided.items() if how == "kept"}
    return e


def category(message: str) -> str:
    """The kind of a refusal, from its message."""
    kinds = [("removes nothing from", "nothing"), ("negative index", "spec"), ("duplicate index", "spec"), ("is out of range", "range"),
             ("through its coupled group", "emptied"), ("would remove every ", "count"),
             ("removes every ", "all"), ("cannot remove", "fixed"), ("conflicts with", "conflict"),
             ("gives different channels", "conflict"), ("no layer", "no match"),
             ("would become unequal", "sections"), ("would keep no channel", "sections"),
             ("has no unit", "no match")]
    for text, kind in kinds:
        if text in message:
            return kind
    return "other: " + message


def _removed_ids(resolved) -> set:
    return {(owner(path, unit), j) for group in resolved.groups for path, idx, unit in group.members
            for j in idx}


def _width(model, name: str) -> int:
    """The width of an owner in ``model``: units/filters of a producer, an attention layer's
    heads (``mha3:heads``) or its output width."""
    path, _, unit = name.partition(":")
    layer = reference.get_layer_by_path(model, path)
    if unit:
        return layer.num_heads
    if isinstance(layer, keras.layers.Dense):
        return layer.units
    if hasattr(layer, "filters"):
        return layer.filters
    out = layer.output
    return int((out[0] if isinstance(out, (list, tuple)) else out).shape[-1])


def reference_model(built: Built, groups: set) -> keras.Model:
    """The original with the removed groups' channels zeroed where they are read, and the
    removed heads' value projections zeroed: built without prunec code."""
    facts = built.facts
    model = reference.zeroed_reads_model(built.model, facts.zero_map(groups))
    return reference.zero_weights(model, facts.zeroed_heads(groups))


def _check_compiled(built: Built, e: Expectation, resolved, rebuilt, x) -> None:
    facts = built.facts
    ids = _removed_ids(resolved)
    unknown = {i for i in ids if i not in facts.parent}
    assert not unknown, f"plan removes channels the model does not have: {sorted(unknown)[:5]}"
    groups = {facts.find(i) for i in ids}
    members = facts.groups()
    partial = [g for g in groups if not members[g] <= ids]
    assert not partial, f"plan removes part of a coupled group: {sorted(members[partial[0]])}"
    fixed = groups & facts.fixed_groups()
    assert not fixed, f"plan removes fixed channels: {sorted(members[next(iter(fixed))])[:4]}"
    if e.exact:
        assert groups == e.removed, (f"plan removes {sorted(groups)}, the spec says "
                                     f"{sorted(e.removed)}")
    else:
        assert e.removed <= groups and not (e.kept & groups), "plan disagrees with explicit rules"
        for candidates, count, steered in e.counts:
            got = len(candidates & groups)
            assert got == count or steered and got < count, (
                f"criterion removed {got} of {len(candidates)} groups of one "
                f"coupled set, expected {count}")
    for name, width in built.widths.items():
        after = _width(rebuilt, name)
        gone = sum(1 for who, _ in ids if who == name)
        assert after == width - gone, f"{name}: {after} channels after, expected {width} - {gone}"
    reference.assert_outputs_close(reference_model(built, groups), rebuilt, x)
    assert_params_counted(resolved, built.model, rebuilt)


def check(built: Built, spec: dict, workdir: Path, via_cli: bool = False, mask: bool = False,
          existing_output: bool = False) -> str:
    """Run prunec on (model, spec); assert the outcome is right; return its kind ("ok", ...)."""
    e = expect(built.facts, spec)
    spec_path = workdir / "spec.yaml"
    spec_path.write_text(spec_text(spec))
    x = reference.random_inputs(built.model)
    if not via_cli:
        try:
            rebuilt, resolved, _ = apply(parse_spec(spec_path.read_bytes(), str(spec_path)),
                                         built.model, mode="mask" if mask else "slice")
        except VerificationError:
            raise
        except CompilerError as error:
            return _check_refusal(error, e, spec_path)
        assert e.allows("ok"), f"compiled, but the spec must be refused ({sorted(e.refusals)})"
        if not mask:
            _check_compiled(built, e, resolved, rebuilt, x)
        else:
            oracle = reference_model(built, {built.facts.find(i) for i in _removed_ids(resolved)})
            reference.assert_outputs_close(oracle, rebuilt, x)
            assert resolved.params[0] == built.model.count_params() == rebuilt.count_params()
        return "ok"
    model_path, out = workdir / "model.keras", workdir / "out.keras"
    built.model.save(model_path)
    old = b"an older output, to be left alone on failure"
    if existing_output:
        out.write_bytes(old)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["apply", str(spec_path), str(model_path), "-o", str(out)])
    warnings = [line for line in stderr.getvalue().splitlines() if line.startswith("warning: ")]
    assert all(line.startswith(f"warning: {spec_path}:") for line in warnings), warnings
    err = "".join(line + "\n" for line in stderr.getvalue().splitlines() if line not in warnings)
    stray = [p.name for p in workdir.iterdir() if p.name.startswith(".")]
    assert not stray, f"temporary files left behind: {stray}"
    if code == 0:
        assert err == "", err
        assert e.allows("ok"), f"compiled, but the spec must be refused ({sorted(e.refusals)})"
        resolved = apply(parse_spec(spec_path.read_bytes(), str(spec_path)), built.model,
                         check=False)[1]
        _check_compiled(built, e, resolved, keras.saving.load_model(out), x)
        return "ok"
    assert code == 1, f"exit code {code}: {err}"
    lines = err.splitlines()
    assert len(lines) >= 1 and all(line.startswith("error: ") for line in lines), err
    assert len(lines) == 1 or category(lines[0]) == "spec", f"several lines for one refusal: {err}"
    assert out.read_bytes() == old if existing_output else not out.exists(), "output was touched"
    kind = category(lines[0])
    assert e.allows(kind), f"refused as {kind!r}, expected {_expected(e)}: {lines[0]}"
    assert lines[0].startswith(f"error: {spec_path}:"), f"refusal not located in the spec: {lines[0]}"
    return kind


def _check_refusal(error: CompilerError, e: Expectation, spec_path: Path) -> str:
    text = str(error)
    assert "\n" not in text, text
    kind = category(text)
    assert e.allows(kind), f"refused as {kind!r}, expected {_expected(e)}: {text}"
    assert text.startswith(f"{spec_path}:"), f"refusal not located in the spec: {text}"
    if isinstance(error, SpecError):
        assert all(str(each).startswith(f"{spec_path}:") for each in error.all())
    return kind


def _expected(e: Expectation) -> str:
    return " or ".join(sorted(e.refusals | ({"ok"} if e.compiles else set())))
