"""Sensitivity analysis: what pruning each layer alone costs, and a spec that spends a budget.

For every coupled set the spec's rules select (a layer, or the layers an ``Add`` ties together),
prune it alone at fractions 0.1 ... 0.9 by its rule's criterion (and ``min_keep``/``round_to``),
rebuild without verification (the law is checked by ``apply``; here only the measure matters) and
measure, on the data: accuracy when there are labels ``y``, else the output's relative deviation
``mean_batches ||f_pruned(x) - f(x)|| / ||f(x)||``. The JSON lists set x fraction x (metric,
FLOPs, params).

``--suggest flops=F`` then picks a fraction per set greedily: start from nothing removed; take,
again and again, the next fraction step of the set that costs the least measured loss (accuracy
lost, or deviation gained) per FLOP it saves, until the combined plan (planned exactly, since
neighbouring layers share FLOPs) is at most ``F`` x the original; the result is written as a spec
of per-layer ``fraction`` rules. Greedy on single-layer measurements is an estimate: review it with
``prunec plan`` and ``prunec evaluate``.
"""

from __future__ import annotations

import dataclasses
import glob
import json

import keras
import numpy as np

from .errors import CompilerError, ConstraintError
from .evaluate import compile_config, evaluate
from .spec import Spec, SpecRule

__all__ = ["sensitivity", "suggest", "run_sensitivity", "FRACTIONS"]

FRACTIONS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def _entries(graph, spec: Spec, scorer) -> list[tuple[str, SpecRule]]:
    """One ``(layer path, rule)`` per coupled set the spec selects, in rule then model order."""
    from .plan import _Planner
    planner = _Planner(graph, spec, scorer)
    entries, seen = [], set()
    for rule in spec.rules:
        for path in planner._targets(rule):
            layouts = graph.units[path].get(rule.unit) or []
            if not layouts or not len(layouts[0]):
                continue
            coupled = int(graph.coupled_set[graph.root[layouts[0].ids[0]]])
            if coupled in seen or graph.root[layouts[0].ids[0]] in graph.fixed:
                continue
            seen.add(coupled)
            entries.append((path, rule))
    return entries


def _single(rule: SpecRule, path: str, fraction: float, number: int = 1) -> SpecRule:
    return dataclasses.replace(rule, number=number, layer=glob.escape(path), type=None, exclude=(),
                               remove=None, keep=None, count=None, fraction=fraction, optional=False,
                               criterion=rule.criterion if rule.criterion else "l1")


def _measure(model, rebuilt, data, config, labelled: bool, reference=None) -> float:
    if labelled:
        return evaluate(rebuilt, data, None, config)["accuracy"]
    total, batches = 0.0, 0
    for inputs, _ in data.batches(model):
        feed = inputs if len(inputs) > 1 else inputs[0]
        a = np.asarray(keras.ops.convert_to_numpy(model(feed, training=False)), dtype=np.float64)
        b = np.asarray(keras.ops.convert_to_numpy(rebuilt(feed, training=False)), dtype=np.float64)
        total += float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))
        batches += 1
    return total / max(batches, 1)


def sensitivity(model, spec: Spec, data, scorer=None, config=None, fractions=FRACTIONS) -> dict:
    """The report: ``{"metric", "baseline", "flops", "params", "layers": [...]}``."""
    from .api import rebuild, scorer as make_scorer
    from .graph import build_graph
    from .plan import plan
    graph = build_graph(model)
    scorer = scorer or make_scorer(spec, data)
    labelled = data.has_y
    data.check(model)
    baseline = evaluate(model, data, None, config)["accuracy"] if labelled else 0.0
    report = {"metric": "accuracy" if labelled else "relative_deviation", "baseline": baseline,
              "data_sha256": data.fingerprint(), "layers": []}
    for path, rule in _entries(graph, spec, scorer):
        results = []
        for fraction in fractions:
            single = dataclasses.replace(spec, rules=(_single(rule, path, fraction),), target=None)
            try:
                resolved = plan(graph, single, scorer)
            except ConstraintError as error:
                results.append({"fraction": fraction, "metric": None, "error": error.message})
                continue
            report.setdefault("flops", resolved.flops[0])
            report.setdefault("params", resolved.params[0])
            rebuilt = rebuild(model, resolved, check=False)[0]
            results.append({"fraction": fraction,
                            "metric": _measure(model, rebuilt, data, config, labelled),
                            "flops": resolved.flops[1], "params": resolved.params[1]})
        report["layers"].append({"layer": path, "criterion": rule.criterion, "results": results})
    return report


def suggest(model, spec: Spec, report: dict, measure: str, budget: float, scorer) -> Spec:
    """Per-layer fractions meeting ``measure <= budget x original`` (see the module docstring)."""
    from .graph import build_graph
    from .plan import plan
    graph = build_graph(model)
    rules = {entry["layer"]: rule for entry, (_, rule) in
             zip(report["layers"], _entries(graph, spec, scorer))}
    better = report["metric"] == "accuracy"
    steps = {}
    for entry in report["layers"]:
        usable = [r for r in entry["results"] if r.get("metric") is not None]
        steps[entry["layer"]] = usable
    chosen = {layer: -1 for layer in steps}         # index into steps[layer]; -1: nothing removed
    index = 0 if measure == "params" else 1

    def combined():
        chosen_rules = tuple(_single(rules[layer], layer, steps[layer][i]["fraction"], n + 1)
                             for n, (layer, i) in enumerate((l, i) for l, i in chosen.items() if i >= 0))
        if not chosen_rules:
            return None, report[measure]
        resolved = plan(graph, dataclasses.replace(spec, rules=chosen_rules, target=None), scorer)
        return chosen_rules, (resolved.params, resolved.flops)[index][1]

    limit = budget * report[measure]
    rules_now, value = combined()
    while value > limit:
        best = None
        for layer, i in chosen.items():
            if i + 1 >= len(steps[layer]):
                continue
            now = steps[layer][i] if i >= 0 else {"metric": report["baseline"], measure: report[measure]}
            nxt = steps[layer][i + 1]
            lost = (now["metric"] - nxt["metric"]) if better else (nxt["metric"] - now["metric"])
            saved = max(now[measure] - nxt[measure], 1)
            key = (max(lost, 0.0) / saved, -saved)
            if best is None or key < best[0]:
                best = (key, layer)
        if best is None:
            raise ConstraintError(f"the budget {measure} {budget:g} cannot be met by the selected "
                                  "layers at fraction 0.9 or less", spec.path,
                                  "select more layers in the spec")
        chosen[best[1]] += 1
        rules_now, value = combined()
    return dataclasses.replace(spec, rules=rules_now or (), target=None)


def spec_text(spec: Spec, note: str) -> str:
    lines = [f"# {note}", "version: 1"]
    for key in ("loss",):
        if getattr(spec, key):
            lines.append(f"{key}: {getattr(spec, key)}")
    lines.append("prune:")
    for rule in spec.rules:
        lines += [f"  - layer: {json.dumps(rule.layer)}", f"    fraction: {rule.fraction:g}",
                  f"    criterion: {rule.criterion}"]
        lines += [f"    {k}: {getattr(rule, k)}" for k in ("round_to", "min_keep")
                  if getattr(rule, k) is not None]
    return "\n".join(lines) + "\n"


def plot(report: dict, out: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CompilerError("--plot needs matplotlib", out, "pip install matplotlib "
                            "(or pip install 'prunec[plot]')") from None
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for entry in report["layers"]:
        points = [(r["fraction"], r["metric"]) for r in entry["results"] if r.get("metric") is not None]
        if points:
            axes.plot(*zip(*points), marker="o", label=entry["layer"])
    axes.set_xlabel("fraction of the layer's channels removed")
    axes.set_ylabel(report["metric"].replace("_", " "))
    if report["metric"] == "accuracy":
        axes.axhline(report["baseline"], color="grey", linestyle=":", label="original")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    from .files import replacing
    with replacing(out, CompilerError, {}) as temporary:
        figure.savefig(temporary, format=out.rsplit(".", 1)[-1].lower(), dpi=120)
    plt.close(figure)


def run_sensitivity(args, spec: Spec, model_path: str, data) -> int:
    """``prunec sensitivity``: write the JSON report, the plot and the suggested spec."""
    from .api import scorer as make_scorer
    from .files import write_text
    from .modelio import load_model
    measure = budget = None
    if args.suggest:
        name, _, value = args.suggest.partition("=")
        try:
            budget = float(value)
        except ValueError:
            budget = None
        if name not in ("flops", "params") or budget is None or not 0 < budget < 1:
            raise CompilerError(f"--suggest {args.suggest!r} is not MEASURE=FRACTION",
                                hint="e.g. --suggest flops=0.5 (or params=0.5)")
        measure = name
    model = load_model(model_path, trust=args.trust_model_code)
    scorer = make_scorer(spec, data)
    report = sensitivity(model, spec, data, scorer, compile_config(model, model_path))
    protect = {"the spec": spec.path, "the input model": model_path}
    write_text(args.output, json.dumps(report, indent=2) + "\n", protect=protect)
    print(f"wrote {args.output}: {len(report['layers'])} layers x {len(FRACTIONS)} fractions "
          f"({report['metric']})")
    if args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}")
    if measure:
        suggested = suggest(model, spec, report, measure, budget, scorer)
        out = args.suggest_output or spec.path.rsplit(".", 1)[0] + ".suggested.yaml"
        write_text(out, spec_text(suggested, f"prunec sensitivity --suggest {args.suggest}: "
                                  f"per-layer fractions from {args.output}"), protect=protect)
        print(f"wrote {out}: {len(suggested.rules)} rules")
    return 0
