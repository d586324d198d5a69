"""Peak memory of a compile against the size of the model's weights.

    python benchmarks/memory.py [FAMILY ...]

Each family runs in a fresh process: build the model (default input size, ``weights=None``), then
reset the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``) and compile it by
``specs/family_50.yaml`` (``build_graph``, ``plan``, ``emit``; no verification). Reported:

* weights: the model's variables in bytes (what the original already holds before the compile);
* peak RSS: ``VmHWM`` after the compile minus ``VmRSS`` before it. It includes *everything* the
  compile allocates and still holds at its peak: the rebuilt model's variables (the output),
  TensorFlow's temporaries, NumPy copies, Python objects, and allocator slack;
* tracemalloc peak: what Python and NumPy allocated at most (TensorFlow's own allocator is not
  seen by tracemalloc);
* the floor's peak RSS, measured the same way in its own process: ``clone_model`` plus
  ``set_weights(get_weights())`` of the unpruned model.

Linux only (``/proc``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

from common import build, machine, selected, spec

import keras  # noqa: E402  (common sets the environment first)

from compiler.api import build_graph, emit, plan  # noqa: E402

MB = 1024 * 1024


def status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(name: str, what: str) -> dict:
    shrink = spec("family_50.yaml")
    model = build(name)
    weights = sum(v.numpy().nbytes for v in model.weights)
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS")
    tracemalloc.start()
    if what == "floor":
        rebuilt = keras.models.clone_model(model)
        rebuilt.set_weights(model.get_weights())
    else:
        rebuilt = emit(model, plan(build_graph(model), shrink))
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = status("VmHWM") - before
    output = sum(v.numpy().nbytes for v in rebuilt.weights)
    return {"weights": weights, "output": output, "peak": peak, "traced": traced}


def child(name: str, what: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", name, what], check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        print(json.dumps(measure(argv[1], argv[2])))
        return
    print(machine())
    print("spec: specs/family_50.yaml; one fresh process per measurement; MB\n")
    header = ("family", "weights", "rebuilt weights", "compile peak RSS", "/ weights",
              "compile tracemalloc", "floor peak RSS", "/ weights")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in selected(argv):
        m, f = child(name, "compile"), child(name, "floor")
        row = (name, f"{m['weights'] / MB:.0f}", f"{m['output'] / MB:.0f}", f"{m['peak'] / MB:.0f}",
               f"{m['peak'] / m['weights']:.2f}x", f"{m['traced'] / MB:.0f}", f"{f['peak'] / MB:.0f}",
               f"{f['peak'] / f['weights']:.2f}x")
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
