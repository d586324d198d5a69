"""Plans as text people review: an aligned table, Markdown for a code review, or stable JSON.

Everything here is a pure function of the ``Plan``: the same plan gives byte-identical output, in
the model's topological order, with exact integers, one layer a line, so that ``git diff`` of two
plans reads as the change of the shrink itself.
"""

from __future__ import annotations

import json

from .plan import GroupChange, LayerChange, Plan

__all__ = ["format_plan", "plan_to_dict", "compress_indices", "FORMATS"]

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


def _shape(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _delta(before: int, after: int) -> str:
    if before == 0:
        return ""
    return f"{(after - before) / before * 100:+.1f}%"


def plan_to_dict(plan: Plan) -> dict:
    """The JSON form; its keys are documented in ``schemas/plan.schema.json``-style in the README."""
    return {
        "format": "prunec-plan",
        "version": 1,
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
        "groups": [
            {
                "group": g.number,
                "rules": list(g.rules),
                "coupled_by": list(g.coupled_by),
                "approximate": g.approximate,
                "members": [{"layer": owner, "removed": list(indices)} for owner, indices in g.members],
            }
            for g in plan.groups
        ],
        "notes": list(plan.notes),
        "totals": {
            "params": {"before": plan.params[0], "after": plan.params[1]},
            "flops": {"before": plan.flops[0], "after": plan.flops[1]},
        },
    }


def _layer_rows(changes: list[LayerChange]) -> list[list[str]]:
    return [[c.path, c.class_name, f"{_shape(c.output_shape[0])} -> {_shape(c.output_shape[1])}",
             f"{c.params[0]} -> {c.params[1]}", f"{c.flops[0]} -> {c.flops[1]}"] for c in changes]


def _group_line(group: GroupChange) -> str:
    rules = ("rule " if len(group.rules) == 1 else "rules ") + ",".join(map(str, group.rules))
    members = "; ".join(f"{owner} -{len(idx)} [{compress_indices(idx)}]" for owner, idx in group.members)
    coupled = f" coupled by {', '.join(group.coupled_by)}" if group.coupled_by else ""
    approximate = " APPROXIMATE" if group.approximate else ""
    return f"group {group.number} ({rules}{coupled}){approximate}: {members}"


def _totals(plan: Plan) -> list[str]:
    (p0, p1), (f0, f1) = plan.params, plan.flops
    return [f"params {p0} -> {p1} ({_delta(p0, p1)})", f"FLOPs {f0} -> {f1} ({_delta(f0, f1)})"]


def _text(plan: Plan) -> str:
    header = ["layer", "type", "output shape", "params", "FLOPs"]
    rows = [header] + _layer_rows(plan.changes())
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"plan: {plan.spec_path} on model '{plan.model_name}'", ""]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines += [""] + [_group_line(g) for g in plan.groups]
    lines += [f"note: {note}" for note in plan.notes]
    lines += [""] + [f"total {line}" for line in _totals(plan)]
    return "\n".join(lines) + "\n"


def _markdown(plan: Plan) -> str:
    lines = [f"### prunec plan: `{plan.spec_path}` on `{plan.model_name}`", "",
             "| layer | type | output shape | params | FLOPs |", "|---|---|---|---:|---:|"]
    lines += ["| " + " | ".join(f"`{cell}`" if i == 0 else cell for i, cell in enumerate(row)) + " |"
              for row in _layer_rows(plan.changes())]
    lines += ["", "**Groups**", ""] + [f"- {_group_line(g)}" for g in plan.groups]
    if plan.notes:
        lines += ["", "**Notes**", ""] + [f"- {note}" for note in plan.notes]
    lines += ["", "**Totals**: " + "; ".join(_totals(plan))]
    return "\n".join(lines) + "\n"


def format_plan(plan: Plan, fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps(plan_to_dict(plan), indent=2, sort_keys=False) + "\n"
    if fmt == "markdown":
        return _markdown(plan)
    if fmt == "text":
        return _text(plan)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
