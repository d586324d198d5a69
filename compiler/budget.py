"""Global budgets: ``target: {flops: 0.5}`` sizes every rule that gives no amount of its own.

Every such rule contributes its candidate groups (as a ``fraction`` rule would rank them, within
each coupled set) to **one** ranking. Scores of different layers are not comparable as they are
(an L1 norm grows with fan-in, an activation with the layer's scale), so each is normalised within
its coupled set first:

* ``lamp`` (default; Lee et al. 2021, LAMP): sort a set's scores ascending, ``s_1 <= ... <= s_n``;
  ``lamp(s_i) = s_i**2 / sum_{j >= i} s_j**2``. The largest score of every set is 1, so no set is
  ever emptied by the ranking alone, and a set with one dominant channel gives up its small ones
  first.
* ``layer``: ``s_i / mean(s)``, per set.

Removing the ``k`` lowest-ranked groups (per set, subject to the rule's ``min_keep``, ``round_to``
and at least one kept channel) never increases FLOPs or params as ``k`` grows, so a binary search
finds the smallest ``k`` whose model is at most ``target x original``: as close below the target
as the channel granularity allows. The plan's ``budget`` (and a note) says where it landed. Sets
tied by a balance (a split's equal sections) are chosen within it (``balance.py``): they may remove
fewer than ranked, and then the search is monotone only nearly, but it only ever stops at a ``k``
it measured within the target.
"""

from __future__ import annotations

import math

import numpy as np

from .balance import Choice, choose, describe
from .errors import ConstraintError
from .rules import rule_for, weight_paths

__all__ = ["meet_target", "normalise", "cost"]


def normalise(scores: np.ndarray, how: str = "lamp") -> np.ndarray:
    """Scores of one coupled set made comparable with other sets' (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    if how == "layer":
        mean = scores.mean() if len(scores) else 0.0
        return scores / mean if mean > 0 else np.zeros_like(scores)
    order = np.argsort(scores, kind="stable")
    squared = scores[order] ** 2
    tail = np.cumsum(squared[::-1])[::-1]              # sum_{j >= i} s_j^2, in sorted order
    out = np.empty_like(scores)
    out[order] = np.divide(squared, tail, out=np.zeros_like(squared), where=tail > 0)
    return out


def cost(graph, removed: np.ndarray) -> tuple[int, int]:
    """``(params, FLOPs)`` of the model with the ids in ``removed`` gone, as ``Plan`` counts them."""
    params = flops = 0
    for calls in graph.calls_by_path.values():
        first = calls[0]
        rule = rule_for(first.op)
        shapes = {p: list(v.shape) for p, v in weight_paths(first.op).items()}
        for name, axes in (rule.weight_axes(first).items() if rule else ()):
            if name in shapes:
                for axis, layout in axes.items():
                    shapes[name][axis % len(shapes[name])] = len(layout.kept(removed))
        shapes = {p: tuple(s) for p, s in shapes.items()}
        params += sum(math.prod(s) for s in shapes.values())
        if rule is not None:
            flops += sum(2 * rule.macs(call, shapes) for call in calls)
    return params, flops


def meet_target(planner, budgeted: list) -> dict:
    """Decide the groups of ``budgeted`` (``(rule, paths)`` pairs) so that the planner's model
    meets ``planner.spec.target``; return what the plan records as ``budget``."""
    spec, graph = planner.spec, planner.graph
    target = dict(spec.target)
    measure = "flops" if "flops" in target else "params"
    fraction, how = float(target[measure]), target.get("normalize", "lamp")
    where = spec.locations.get("target", spec.path)
    index = 1 if measure == "flops" else 0

    sets = []      # (rule, roots in ascending score order, normalised scores in that order, cap)
    seen: set[int] = set()
    for rule, paths in budgeted:
        if not paths:
            continue
        scores = planner._criterion_scores(rule)
        candidates, where_of, _ = planner._candidates(rule, paths)
        for members in candidates.values():
            roots = np.array([r for r in members if planner.state[r] < 0 and r not in seen],
                             dtype=np.int64)
            if not len(roots):
                continue
            planner._check_scored(rule, scores[roots], where_of[int(roots[0])])
            seen.update(roots.tolist())
            order = np.argsort(scores[roots], kind="stable")
            sets.append((rule, roots[order], normalise(scores[roots], how)[order]))
    if not sets:
        raise ConstraintError("the target has no channels to rank: every rule without an amount "
                              "selects only channels other rules decided or that cannot go",
                              where, "select more layers in the rules without an amount")

    # one ranking: (normalised score, set, position in set); ties by order of appearance
    entries = [(float(s), n, i) for n, (_, _, normed) in enumerate(sets) for i, s in enumerate(normed)]
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    taken_by_k = np.zeros((len(sets),), dtype=np.int64)
    base = planner.state[graph.root] == 1          # what other rules already removed
    original = cost(graph, np.zeros(graph.num_ids, dtype=bool))
    limit = fraction * original[index]

    def removal(k: int) -> tuple[np.ndarray, dict]:
        """The state after the ``k`` lowest-ranked groups go (as each set's rule rounds them,
        chosen within the balances they touch), and the sets balances steered (``choose``)."""
        taken_by_k[:] = 0
        for _, n, _ in entries[:k]:
            taken_by_k[n] += 1
        choices = []
        for n, (rule, roots, normed) in enumerate(sets):
            size = len(roots)
            keep = rule.rounded(size, max(size - int(taken_by_k[n]), 1))
            choices.append(Choice(roots, normed, size - keep, lambda m, rule=rule, size=size:
                                  rule.rounded(size, max(size - m, 1)) == size - m))
        masks, adjusted = choose(graph, planner.state == 1, choices)
        state = planner.state.copy()
        for (_, roots, _), mask in zip(sets, masks):
            state[roots] = mask.astype(np.int8)
        return state, adjusted

    def measured(k: int) -> int:
        state, _ = removal(k)
        return cost(graph, base | (state[graph.root] == 1))[index]

    low, high = 0, len(entries)
    best = measured(high)
    if best > limit:
        raise ConstraintError(
            f"target {measure} {fraction:g} cannot be reached: removing every channel the rules "
            f"allow leaves {best / original[index]:.3f} of the original", where,
            "select more layers, lower min_keep/round_to, or raise the target")
    while low < high:                              # smallest k with cost <= limit
        middle = (low + high) // 2
        if measured(middle) <= limit:
            high = middle
        else:
            low = middle + 1
    state, adjusted = removal(low)
    for n, (rule, roots, _) in enumerate(sets):
        planner._decide(rule, roots, state[roots] == 1)
    if adjusted:
        balances = list({id(b): b for _, found in adjusted.values() for b in found}.values())
        planner._note(f"target {measure} {fraction:g}: {len(adjusted)} coupled "
                      f"set{'s' if len(adjusted) != 1 else ''} removed fewer channels than ranked: "
                      f"{describe(balances)} must keep as many channels each")
    reached = measured(low)
    result = {"measure": measure, "target": fraction, "normalize": how,
              "before": original[index], "after": reached,
              "reached": reached / original[index] if original[index] else 0.0}
    planner._note(f"target {measure} {fraction:g}: {original[index]} -> {reached} "
                  f"({result['reached']:.4f} of the original; {how}-normalised ranking over "
                  f"{len(sets)} coupled set{'s' if len(sets) != 1 else ''})")
    return result

