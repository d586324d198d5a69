"""What the shrink buys: CPU inference latency before and after a 50% prune, beside FLOPs.

    python benchmarks/latency.py [FAMILY ...]      (default: ResNet50 MobileNetV2 EfficientNetB0)

Each model (default input size, ``weights=None``) is pruned by ``specs/family_50.yaml``. Latency is
``model.predict_on_batch`` (Keras' compiled predict function) on random inputs, after two warm-up
calls, median of 21 calls at batch 1 and of 7 calls at batch 32, calls of the two models
alternating. Speedups are before / after;
"share" is the latency speedup as a fraction of the FLOPs speedup (the target is at least 0.8).
FLOPs count the multiply-accumulates of Conv/Dense layers (twice); BatchNormalization,
activations, adds, multiplies and depthwise work scale with the channel count, not its square, so
"activation speedup" (the total size of every layer's outputs, before / after: a proxy for the
memory traffic of that work) is shown beside it.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import keras
import numpy as np
from common import build, machine, selected, spec

from compiler.api import build_graph, emit, plan  # noqa: E402

DEFAULT = ["ResNet50", "MobileNetV2", "EfficientNetB0"]
RUNS = {1: 21, 32: 7}


def latencies(model, smaller, batch: int) -> tuple[float, float]:
    """Median seconds per call of each model; their calls alternate, so drift hits both."""
    x = np.random.default_rng(0).standard_normal((batch,) + tuple(model.input.shape[1:])).astype("float32")
    for _ in range(2):
        model.predict_on_batch(x)
        smaller.predict_on_batch(x)
    times = ([], [])
    for _ in range(RUNS[batch]):
        for which, each in enumerate((model, smaller)):
            start = time.perf_counter()
            each.predict_on_batch(x)
            times[which].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def activations(model) -> int:
    """Entries in every layer output of one sample (the three models here nest no models)."""
    total = 0
    for layer in model.layers:
        for tensor in keras.tree.flatten(layer.output):
            total += int(np.prod(tensor.shape[1:]))
    return total


def main(argv: list[str]) -> None:
    shrink = spec("family_50.yaml")
    print(machine())
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("spec: specs/family_50.yaml; latency in ms, median of 21 (batch 1) / 7 (batch 32) calls\n")
    header = ("family", "FLOPs before", "FLOPs after", "FLOPs speedup", "activation speedup", "batch",
              "before ms", "after ms", "latency speedup", "share")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in selected(argv) if argv else DEFAULT:
        model = build(name)
        resolved = plan(build_graph(model), shrink)
        smaller = emit(model, resolved)
        (f0, f1) = resolved.flops
        traffic = activations(model) / activations(smaller)
        for batch in RUNS:
            before, after = latencies(model, smaller, batch)
            share = (before / after) / (f0 / f1)
            row = (name, f"{f0 / 1e9:.2f} G", f"{f1 / 1e9:.2f} G", f"{f0 / f1:.2f}x", f"{traffic:.2f}x", str(batch),
                   f"{before * 1e3:.1f}", f"{after * 1e3:.1f}", f"{before / after:.2f}x", f"{share:.2f}")
            print("| " + " | ".join(row) + " |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
