"""Plans as text people review: an aligned table, Markdown for a code review, or stable JSON.

Everything here is a pure function of the ``Plan``: the same plan gives byte-identical output, in
the model's topological order, with exact integers, one layer a line and one group member a line,
so that ``git diff`` of two plans reads as the change of the shrink itself. The JSON form's keys
are documented by ``compiler/schemas/plan.schema.json`` (``prunec schema plan``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .artifacts import ARTIFACT_VERSION, PLAN_FORMAT, render_json
from .layout import OUTPUTS

if TYPE_CHECKING:  # plan.py imports Keras; ``prunec diff`` formats without it
    from .plan import GroupChange, LayerChange, Member, Plan

__all__ = ["format_plan", "plan_to_dict", "group_to_dict", "member_to_dict", "compress_indices", "format_delta",
           "align_columns", "FORMATS"]

FORMATS = ("text", "markdown", "json")


def compress_indices(indices) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``: exact and short."""
    parts, run = [], []
    for index in indices:
        if run and index == run[-1] + 1:
            run.append(index)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [index]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


def format_delta(before: int, after: int) -> str:
    """``"1000 -> 750 (-25.0%)"``; the percentage is left out when ``before`` is 0."""
    if before == 0:
        return f"{before} -> {after}"
    return f"{before} -> {after} ({(after - before) / before * 100:+.1f}%)"


def _shape(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def member_to_dict(member: Member) -> dict:
    """``{"layer", "removed"}``, and ``"unit"`` when it is not the layer's outputs."""
    data = {"layer": member.layer, "removed": list(member.removed)}
    if member.unit != OUTPUTS:
        data["unit"] = member.unit
    return data


def group_to_dict(group: GroupChange) -> dict:
    """One group as in plan and lock files (``$defs/group`` of both schemas)."""
    return {
        "group": group.number,
        "rules": list(group.rules),
        "coupled_by": list(group.coupled_by),
        "approximate": group.approximate,
        "members": [member_to_dict(member) for member in group.members],
    }


def plan_to_dict(plan: Plan) -> dict:
    """The JSON form, keys in the order of ``schemas/plan.schema.json``."""
    return {
        "format": PLAN_FORMAT,
        "version": ARTIFACT_VERSION,
        "spec": plan.spec_path,
        "model": plan.model_name,
        "layers": [
            {
                "layer": c.path,
                "type": c.class_name,
                "output_shape": {"before": list(c.output_shape[0]), "after": list(c.output_shape[1])},
                "params": {"before": c.params[0], "after": c.params[1]},
                "flops": {"before": c.flops[0], "after": c.flops[1]},
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(c.config.items())},
            }
            for c in plan.changes()
        ],
        "groups": [group_to_dict(g) for g in plan.groups],
        "notes": list(plan.notes),
        "totals": {
            "params": {"before": plan.params[0], "after": plan.params[1]},
            "flops": {"before": plan.flops[0], "after": plan.flops[1]},
        },
    }


def _layer_rows(changes: list[LayerChange]) -> list[list[str]]:
    return [[c.path, c.class_name, f"{_shape(c.output_shape[0])} -> {_shape(c.output_shape[1])}",
             f"{c.params[0]} -> {c.params[1]}", f"{c.flops[0]} -> {c.flops[1]}"] for c in changes]


def _group_title(group: GroupChange) -> str:
    rules = ("rule " if len(group.rules) == 1 else "rules ") + ",".join(map(str, group.rules))
    coupled = f", coupled by {', '.join(group.coupled_by)}" if group.coupled_by else ""
    approximate = " (APPROXIMATE)" if group.approximate else ""
    return f"group {group.number}: {rules}{coupled}{approximate}"


def _member_cells(group: GroupChange) -> list[tuple[str, str, str]]:
    """Per member: owner, "removes k of n", the indices."""
    sizes = group.sizes or (None,) * len(group.members)
    return [(member.label, f"removes {len(member.removed)}" + (f" of {size}" if size else ""),
             compress_indices(member.removed)) for member, size in zip(group.members, sizes)]


def align_columns(rows: list[list[str]] | list[tuple[str, ...]], indent: str = "") -> list[str]:
    """Rows of cells as text lines, every column padded to its widest cell, no trailing spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [(indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths))).rstrip()
            for row in rows]


def _totals(plan: Plan) -> list[str]:
    (p0, p1), (f0, f1) = plan.params, plan.flops
    return [f"params {format_delta(p0, p1)}", f"FLOPs {format_delta(f0, f1)}"]


def _text(plan: Plan) -> str:
    header = ["layer", "type", "output shape", "params", "FLOPs"]
    lines = [f"plan: {plan.spec_path} on model '{plan.model_name}'", ""]
    lines += align_columns([header] + _layer_rows(plan.changes()))
    for group in plan.groups:
        lines += ["", _group_title(group)] + align_columns(_member_cells(group), "  ")
    if plan.notes:
        lines += [""] + [f"note: {note}" for note in plan.notes]
    lines += [""] + [f"total {line}" for line in _totals(plan)]
    return "\n".join(lines) + "\n"


def _markdown(plan: Plan) -> str:
    lines = [f"### prunec plan: `{plan.spec_path}` on `{plan.model_name}`", "",
             "| layer | type | output shape | params | FLOPs |", "|---|---|---|---:|---:|"]
    lines += ["| " + " | ".join(f"`{cell}`" if i == 0 else cell for i, cell in enumerate(row)) + " |"
              for row in _layer_rows(plan.changes())]
    if plan.groups:
        lines += ["", "**Groups** (channels removed together)", "",
                  "| group | layer | removes | channels | rules | coupled by |",
                  "|---:|---|---|---|---|---|"]
        for group in plan.groups:
            rules = ",".join(map(str, group.rules))
            coupled = ", ".join(f"`{key}`" for key in group.coupled_by) or "-"
            if group.approximate:
                coupled += " (approximate)"
            for owner, count, indices in _member_cells(group):
                lines.append(f"| {group.number} | `{owner}` | {count.removeprefix('removes ')} | "
                             f"{indices} | {rules} | {coupled} |")
    if plan.notes:
        lines += ["", "**Notes**", ""] + [f"- {note}" for note in plan.notes]
    lines += ["", "**Totals**: " + "; ".join(_totals(plan))]
    return "\n".join(lines) + "\n"


def format_plan(plan: Plan, fmt: str = "text") -> str:
    """The plan as ``text`` (a terminal table), ``markdown`` (for a review) or ``json``."""
    if fmt == "json":
        return render_json(plan_to_dict(plan), rows=("layers", "members"), lines=("notes",))
    if fmt == "markdown":
        return _markdown(plan)
    if fmt == "text":
        return _text(plan)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
