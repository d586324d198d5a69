"""The table of docs/families.md: what the generic 25% spec does to each family.

    python benchmarks/families.py [FAMILY ...]

Each family at its default input size, 1000 classes, ``weights=None``, planned by
``specs/family_25.yaml``: the coupled groups that lose channels, the layers the spec selects but
leaves alone (grouped by why), and parameters and FLOPs before and after.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

from common import build, machine, selected, spec

from compiler.api import build_graph, plan  # noqa: E402

_STOPPED_AT = re.compile(r"at '[^']*' \((\w+)\): ")


def reasons(notes) -> str:
    """``3 x LayerNormalization: its mean and variance ...``, one entry per distinct reason."""
    counts: Counter = Counter()
    for note in notes:
        why = note.split(" alone: ", 1)[1]
        stopped = _STOPPED_AT.match(why)
        why = f"{stopped.group(1)}: {why[stopped.end():]}" if stopped else why
        why = re.sub(r"model output '[^']*'", "the model output", why)
        why = why.split(" (")[0].split(", so ")[0]
        counts[why] += 1
    return "; ".join(f"{n} x {why}" for why, n in counts.most_common())


def main(argv: list[str]) -> None:
    shrink = spec("family_25.yaml")
    print(machine() + "\n")
    print("| family | input | layers | groups pruned | left alone (layers x why) | params before -> after "
          "| FLOPs before -> after |")
    print("|---|---|---|---|---|---|---|")
    for name in selected(argv):
        model = build(name)
        resolved = plan(build_graph(model), shrink)
        (p0, p1), (f0, f1) = resolved.params, resolved.flops
        side = model.input.shape[1]
        print(f"| {name} | {side} | {len(model.layers)} | {len(resolved.groups)} | "
              f"{reasons(resolved.notes)} | {p0 / 1e6:.2f} M -> {p1 / 1e6:.2f} M ({p1 / p0 - 1:+.0%}) "
              f"| {f0 / 1e9:.2f} G -> {f1 / 1e9:.2f} G ({f1 / f0 - 1:+.0%}) |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
