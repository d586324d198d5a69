"""Compile time of a 50% prune against the floor any rebuild pays, per family.

    python benchmarks/compile_time.py [FAMILY ...]

For each family at its default input size (``weights=None``), in one process, floor and compile
runs alternate (so drift hits both), after one warm-up of each, with ``gc.collect()`` before every
timed call; the table shows medians of 5:

* floor: ``keras.models.clone_model(model)`` plus ``set_weights(get_weights())``;
* compile: what ``prunec apply --no-verify`` does between loading and saving: ``build_graph``,
  ``plan`` (``specs/family_50.yaml``: three rules) and ``emit`` (slice mode);
* verify: the check ``prunec apply`` adds (a mask-mode rebuild, and both models on one batch),
  timed once.

It also counts ``clone_model`` calls on the model inside one compile: one rebuild however many
rules (nested models are cloned inside that rebuild).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time

from common import build, machine, selected, spec

import keras  # noqa: E402  (common sets the environment first)

from compiler.api import build_graph, emit, plan, verify  # noqa: E402

REPEATS = 5


def floor(model: keras.Model) -> keras.Model:
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def count_rebuilds(model, resolved) -> int:
    calls = []
    original = keras.models.clone_model

    def counting(cloned, *args, **kwargs):
        calls.append(cloned is model)                  # nested models are part of the one rebuild
        return original(cloned, *args, **kwargs)

    keras.models.clone_model = counting
    try:
        emit(model, resolved)
    finally:
        keras.models.clone_model = original
    return sum(calls)


def timed(function):
    gc.collect()
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def compile_once(model, shrink) -> tuple[dict, object, object]:
    times = {}
    times["graph"], graph = timed(lambda: build_graph(model))
    times["plan"], resolved = timed(lambda: plan(graph, shrink))
    times["emit"], rebuilt = timed(lambda: emit(model, resolved))
    times["compile"] = times["graph"] + times["plan"] + times["emit"]
    return times, resolved, rebuilt


def main(argv: list[str]) -> None:
    shrink = spec("family_50.yaml")
    print(machine())
    print(f"spec: specs/family_50.yaml ({len(shrink.rules)} rules); floor and compile alternate, "
          f"medians of {REPEATS} runs each, seconds\n")
    header = ("family", "layers", "floor", "graph", "plan", "emit", "compile", "ratio", "verify", "rebuilds")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in selected(argv):
        print("| " + " | ".join(measure(name, shrink)) + " |", flush=True)
        keras.backend.clear_session()


def measure(name: str, shrink) -> tuple[str, ...]:
    model = build(name)
    compile_once(model, shrink)                          # warm up both paths once
    floor(model)
    floors, runs = [], []
    for _ in range(REPEATS):
        floors.append(timed(lambda: floor(model))[0])
        times, resolved, rebuilt = compile_once(model, shrink)
        runs.append(times)
    verify_time, _ = timed(lambda: verify(model, rebuilt, resolved))
    rebuilds = count_rebuilds(model, resolved)
    med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    floor_time = statistics.median(floors)
    return (name, str(len(model.layers)), f"{floor_time:.2f}", f"{med['graph']:.2f}",
            f"{med['plan']:.2f}", f"{med['emit']:.2f}", f"{med['compile']:.2f}",
            f"{med['compile'] / floor_time:.2f}x", f"{verify_time:.2f}", str(rebuilds))

if __name__ == "__main__":
    main(sys.argv[1:])
