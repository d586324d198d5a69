"""Criterion choices that keep balances: equal sections that must keep as many channels each.

Some layers need several blocks of channels to keep the same count without tying them channel
by channel: the equal sections of ``ops.split(x, n)`` (Keras splits into ``n`` equal parts), the
two directions of a concatenating ``Bidirectional``. Rules declare them (``ctx.balance``), the
graph lists them (``ModelGraph.balances``). An explicit ``remove``/``keep`` list that breaks one
is refused where the layer is rebuilt (``changes.py``): the user chose those channels. A
criterion rule (``fraction``, ``count``, a ``target``) only asks for an amount, so it chooses
within the balances instead -- the planner and the budget both call ``choose``.

The math. A balance has sections ``S_1 .. S_k``, each the channel ids at its positions. Removing
group ``r`` takes ``v_r[i]`` positions of ``S_i`` (how often its members appear there). A removal
``R`` keeps the balance when ``sum_{r in R} v_r[i]`` is the same for every ``i`` (and smaller than
the section, which must keep a channel). A channel shuffle needs no balance of its own: it
couples index ``j`` of every group, so each group appears once in every row (``shuffle.py``);
but a split *after* a shuffle sees each group at two positions (``v_r = (2, 0)``), which the
arithmetic above covers.

The choice. Each coupled set a rule ranks (a ``Choice``) asks to remove its ``remove``
lowest-ranked groups. When that default keeps every balance, it stands (so models without
balances, and choices that happen to keep them, are planned exactly as before). Otherwise the
coupled sets tied by the broken balances are chosen together. Only a group's *imbalance* matters
to a balance: ``d_r[i] = v_r[i] - v_r[1]`` for ``i = 2 .. k``; groups of one set with the same
``d`` (over every balance involved) are interchangeable, so within such a *class* the
lowest-ranked go first, and groups with ``d = 0`` (in no section, or in every one alike) are left
to fill each set up at the end. A small dynamic programme over the classes -- its state: the
summed imbalance, and how many groups each set has given -- finds the removal that takes the most
groups, at most ``remove`` per set and a count the rule allows (``min_keep``, ``round_to``), then
the lowest total score. Classes that touch the most balances go first, and a state the remaining
classes could not even out is dropped, so nested balances (a ShuffleNet stage: each unit's split
halves the previous one's) stay small. Of the best removals, the first that leaves every section a
channel is taken; zero removal always keeps a balance that others' choices left even. A set
that ends with fewer than it asked for is reported, so the plan can say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .graph import Balance, ModelGraph

__all__ = ["Choice", "choose", "describe", "reason"]

#: states of the dynamic programme beyond which a tangle of balances is left to the default
#: choice (and so to the rebuild's one-line refusal) rather than searched further
MAX_STATES = 200_000


@dataclass(frozen=True)
class Choice:
    """One coupled set a criterion rule removes from."""

    roots: np.ndarray                 # its candidate groups, lowest-ranked first
    scores: np.ndarray                # their ranking scores, in that order
    remove: int                       # how many the rule asks for (the first ``remove``)
    allowed: Callable[[int], bool]    # whether removing n leaves a kept count the rule allows


def choose(graph: ModelGraph, removed: np.ndarray, choices: list[Choice],
           pending: np.ndarray | None = None
           ) -> tuple[list[np.ndarray], dict[int, tuple[int, list[Balance]]]]:
    """Per choice, which of its roots go (booleans in its order); and, for every choice that
    removes another amount than it asked for, ``index -> (amount, the balances why)``.

    ``removed`` is root-indexed: groups other rules removed already (constants here).
    ``pending`` (root-indexed): undecided groups a later rule will decide; a balance touching
    one is left to that rule (two rules on a Bidirectional's two directions), not steered now.
    """
    masks = [np.arange(len(c.roots)) < c.remove for c in choices]
    if not graph.balances or not choices:
        return masks, {}
    owner = np.full(graph.num_ids, -1, dtype=np.int64)
    for i, choice in enumerate(choices):
        owner[choice.roots] = i
    gone = removed & (owner < 0)
    for i, choice in enumerate(choices):
        gone[choice.roots[masks[i]]] = True
    touching, broken = [], []
    for balance in graph.balances:
        roots = [graph.root[ids] for ids in balance.sections]
        mine = {int(i) for r in roots for i in np.unique(owner[r]) if i >= 0}
        open_ = pending is not None and any((pending[r] & (owner[r] < 0)).any() for r in roots)
        touching.append(set() if open_ else mine)
        counts = {int(gone[r].sum()) for r in roots}
        broken.append(bool(mine) and not open_ and len(counts) > 1)
    if not any(broken):
        return masks, {}
    components = _components(len(choices), touching)
    adjusted: dict[int, tuple[int, list[Balance]]] = {}
    for members in components:
        which = [b for b, mine in enumerate(touching) if mine & members]
        if not any(broken[b] for b in which):
            continue
        balances = [graph.balances[b] for b in which]
        members = sorted(members)
        solved = _solve(graph, removed & (owner < 0), owner,
                        [choices[i] for i in members], members, balances)
        if solved is None:
            continue            # left as asked: the rebuild refuses it, naming the balance
        for i, mask in zip(members, solved):
            masks[i] = mask
            amount = int(mask.sum())
            if amount != choices[i].remove:
                adjusted[i] = (amount, [graph.balances[b] for b in which if i in touching[b]])
    return masks, adjusted


def describe(balances: list[Balance]) -> str:
    """``the 2 equal sections of 'split' (Split)``; several: ``the equal sections of 'split_1',
    'split_2' and 'split_3' (Split)`` (more than three: ``... and 4 more``)."""
    if len(balances) == 1:
        return balances[0].label()
    kinds: dict[tuple[str, str], list[str]] = {}
    for balance in balances:
        kinds.setdefault((balance.what, balance.class_name), []).append(f"'{balance.key}'")
    parts = []
    for (what, class_name), keys in kinds.items():
        names = keys if len(keys) <= 3 else keys[:3] + [f"{len(keys) - 3} more"]
        listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        parts.append(f"the {what} of {listed} ({class_name})")
    return " and ".join(parts)


def reason(path: str, asked: int, amount: int, size: int, balances: list[Balance]) -> str:
    """Why a choice at ``path`` removes ``amount`` of its ``size`` groups, not ``asked``."""
    names = describe(balances)
    if amount == 0:
        return (f"{names} must keep as many channels each, and no removal of at most {asked} of "
                f"its {size} channels does")
    return (f"removes {amount} of {size} channels of '{path}', not {asked}: {names} must keep "
            "as many channels each")


def _components(n: int, touching: list[set[int]]) -> list[set[int]]:
    """Choices tied by a balance, transitively."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for mine in touching:
        first, *rest = sorted(mine) or [None]
        for other in rest:
            parent[find(other)] = find(first)
    groups: dict[int, set[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), set()).add(i)
    return list(groups.values())


def _solve(graph: ModelGraph, constant: np.ndarray, owner: np.ndarray, choices: list[Choice],
           members: list[int], balances: list[Balance]) -> list[np.ndarray] | None:
    """The best balanced removal of ``choices`` (see the module docstring), or None."""
    sections = [graph.root[ids] for balance in balances for ids in balance.sections]
    firsts, start = [], 0                 # per balance: its first section's column, and the others
    for balance in balances:
        firsts.append((start, range(start + 1, start + len(balance.sections))))
        start += len(balance.sections)

    def imbalance(v) -> tuple[int, ...]:
        """Per balance, each section's count beyond the first section's."""
        return tuple(int(v[i] - v[first]) for first, others in firsts for i in others)

    index = np.full(graph.num_ids, -1, dtype=np.int64)
    for choice in choices:
        index[choice.roots] = np.arange(len(choice.roots))
    counts = [np.zeros((len(c.roots), len(sections)), dtype=np.int64) for c in choices]
    for column, roots in enumerate(sections):
        mine = owner[roots]
        for k, m in enumerate(members):
            np.add.at(counts[k][:, column], index[roots[mine == m]], 1)

    # classes: (choice, positions in it, imbalance of one group); groups whose sections all lose
    # alike (none, or as many each) only fill each choice up, lowest-ranked first, at the end
    width = sum(len(others) for _, others in firsts)
    classes, fill = [], []
    for k, v in enumerate(counts):
        by_d: dict[tuple, list[int]] = {}
        for position, row in enumerate(v):
            by_d.setdefault(imbalance(row), []).append(position)
        fill.append(np.array(by_d.pop((0,) * width, []), dtype=np.int64))
        for d, positions in by_d.items():
            classes.append((k, np.array(positions, dtype=np.int64), d))
    # the classes that touch the most balances first, so that a balance whose classes are all
    # placed must already be even (checked with what the remaining classes could still add)
    classes.sort(key=lambda c: -sum(1 for x in c[2] if x))
    low = [[0] * width for _ in range(len(classes) + 1)]
    high = [[0] * width for _ in range(len(classes) + 1)]
    for i in range(len(classes) - 1, -1, -1):
        k, positions, d = classes[i]
        most = min(len(positions), choices[k].remove)
        low[i] = [a + min(0, most * x) for a, x in zip(low[i + 1], d)]
        high[i] = [a + max(0, most * x) for a, x in zip(high[i + 1], d)]

    start_state = imbalance([int(constant[roots].sum()) for roots in sections])
    states: dict[tuple, tuple[float, tuple[int, ...]]] = {
        (start_state, (0,) * len(choices)): (0.0, ())}
    for i, (k, positions, d) in enumerate(classes):
        prefix = np.concatenate([[0.0], np.cumsum(choices[k].scores[positions])]).tolist()
        lo, hi = low[i + 1], high[i + 1]
        grown: dict[tuple, tuple[float, tuple[int, ...]]] = {}
        for (e, per_choice), (score, picks) in states.items():
            room = min(len(positions), choices[k].remove - per_choice[k])
            for n in range(room + 1):
                after = tuple(a + n * x for a, x in zip(e, d))
                if any(a + l > 0 or a + h < 0 for a, l, h in zip(after, lo, hi)):
                    continue              # what remains could not even this out
                chosen = per_choice[:k] + (per_choice[k] + n,) + per_choice[k + 1:]
                value = (score + prefix[n], picks + (n,))
                key = (after, chosen)
                if key not in grown or value[0] < grown[key][0]:
                    grown[key] = value
        states = grown
        if len(states) > MAX_STATES:
            return None

    ranked = []
    for (e, per_choice), (score, picks) in states.items():
        if any(e):
            continue
        totals = []
        for k, choice in enumerate(choices):
            top = min(per_choice[k] + len(fill[k]), choice.remove)
            total = next((t for t in range(top, per_choice[k] - 1, -1) if choice.allowed(t)), None)
            if total is None:
                break
            totals.append(total)
            score += float(choice.scores[fill[k][: total - per_choice[k]]].sum())
        else:
            ranked.append(((-sum(totals), score), per_choice, picks, totals))
    ranked.sort(key=lambda entry: entry[0])
    for _, per_choice, picks, totals in ranked:
        masks = [np.zeros(len(c.roots), dtype=bool) for c in choices]
        for (k, positions, _), n in zip(classes, picks):
            masks[k][positions[:n]] = True
        for k in range(len(choices)):
            masks[k][fill[k][: totals[k] - per_choice[k]]] = True
        gone = constant.copy()
        for choice, mask in zip(choices, masks):
            gone[choice.roots[mask]] = True
        if all(not gone[roots].all() for roots in sections):     # every section keeps a channel
            return masks
    return None
