"""What changed between two shrinks: ``prunec diff OLD NEW`` over lock files or JSON plans.

A group is known by its members (the producer layers that lose channels together), not by its
number, which shifts whenever an earlier group appears or disappears. So two artifacts differ in

* groups added or removed (a set of layers that loses channels in one and not the other),
* groups changed: the same layers, but channels that moved (now removed, no longer removed), or
  other rules, couplings or approximation,
* totals: parameters and FLOPs before and after, exact,
* for two lock files, the spec's and the model's fingerprints.

Anything else (file names, model names, group numbers) is not a difference.
"""

from __future__ import annotations

from dataclasses import dataclass

from .artifacts import read_artifact
from .report import compress_indices

__all__ = ["Difference", "diff_files", "diff_artifacts"]


@dataclass(frozen=True)
class Difference:
    """The outcome of a diff: ``equal``, and the lines that say what changed."""

    equal: bool
    lines: tuple[str, ...]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def diff_files(old: str, new: str) -> Difference:
    """Read two lock files or JSON plans (any mix) and compare them."""
    return diff_artifacts(read_artifact(old), read_artifact(new), old, new)


def _name(member: dict) -> str:
    """A member's layer, with its unit when that is not the layer's outputs: ``mha (heads)``."""
    return f"{member['layer']} ({member['unit']})" if "unit" in member else member["layer"]


def _members(group: dict) -> tuple[str, ...]:
    return tuple(_name(member) for member in group["members"])


def _key(group: dict) -> frozenset:
    return frozenset(_members(group))


def _title(group: dict) -> str:
    coupled = f" (coupled by {', '.join(group['coupled_by'])})" if group["coupled_by"] else ""
    return f"group {', '.join(_members(group))}{coupled}"


def _member_lines(sign: str, group: dict, verb: str) -> list[str]:
    return [f"{sign}   {_name(m)}  {verb} {len(m['removed'])}  [{compress_indices(m['removed'])}]"
            for m in group["members"]]


def _changed_lines(old: dict, new: dict) -> list[str]:
    """``~`` lines for one group present on both sides; empty when it is the same."""
    lines = []
    before = {_name(m): m["removed"] for m in old["members"]}
    for member in new["members"]:
        was, now = set(before[_name(member)]), set(member["removed"])
        if was == now:
            continue
        parts = [f"removes {len(was)} -> {len(now)}"]
        if now - was:
            parts.append(f"now also [{compress_indices(sorted(now - was))}]")
        if was - now:
            parts.append(f"no longer [{compress_indices(sorted(was - now))}]")
        lines.append(f"~   {_name(member)}  " + "  ".join(parts))
    for field, name in (("rules", "rules"), ("coupled_by", "coupled by"),
                        ("approximate", "approximate")):
        if old[field] != new[field]:
            lines.append(f"~   {name}: {_value(old[field])} -> {_value(new[field])}")
    return lines


def _value(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value).lower()


def diff_artifacts(old: tuple[str, dict], new: tuple[str, dict], old_name: str = "OLD",
                   new_name: str = "NEW") -> Difference:
    """Compare two ``(kind, data)`` pairs as returned by ``read_artifact``."""
    (old_kind, a), (new_kind, b) = old, new
    lines: list[str] = []
    if old_kind == new_kind == "lock":
        if a["spec"]["sha256"] != b["spec"]["sha256"]:
            lines.append("spec changed")
        for part in ("architecture", "weights"):
            if a["model"][f"{part}_sha256"] != b["model"][f"{part}_sha256"]:
                lines.append(f"model {part} changed")
    old_groups = {_key(g): g for g in a["groups"]}
    new_groups = {_key(g): g for g in b["groups"]}
    counts = {"added": 0, "removed": 0, "changed": 0, "unchanged": 0}
    body: list[str] = []
    for key, group in new_groups.items():
        if key not in old_groups:
            counts["added"] += 1
            body += [f"+ {_title(group)}"] + _member_lines("+", group, "removes")
            continue
        changed = _changed_lines(old_groups[key], group)
        counts["changed" if changed else "unchanged"] += 1
        if changed:
            body += [f"~ {_title(group)}"] + changed
    for key, group in old_groups.items():
        if key not in new_groups:
            counts["removed"] += 1
            body += [f"- {_title(group)}"] + _member_lines("-", group, "removed")
    totals = []
    for name, label in (("params", "params"), ("flops", "FLOPs")):
        x, y = a["totals"][name], b["totals"][name]
        if x["before"] != y["before"]:
            totals.append(f"{label} before: {_delta(x['before'], y['before'])}")
        totals.append(f"{label} after: {_delta(x['after'], y['after'])}")
    if not lines and not body and a["totals"] == b["totals"]:
        return Difference(True, ("no changes",))
    summary = ", ".join(f"{n} {what}" for what, n in counts.items())
    header = [f"--- {old_name} ({old_kind})", f"+++ {new_name} ({new_kind})"]
    return Difference(False, tuple(header + lines + [f"groups: {summary}"] + body + totals))


def _delta(before: int, after: int) -> str:
    return f"{before} -> {after} ({after - before:+d})"
