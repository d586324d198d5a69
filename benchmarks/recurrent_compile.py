"""Compile time of a 50% unit prune of a 4-layer LSTM(1024) stack against the rebuild floor.

    python benchmarks/recurrent_compile.py [STEPS]

The model: ``Input((STEPS, 256))`` (default 32 steps) -> four ``LSTM(1024)`` (the first three
return sequences) -> ``Dense(10)``: 30.4 M parameters, 122 MB of float32 weights. The spec removes
half of every LSTM's units, lowest L1 first (``type: LSTM, fraction: 0.5``), which slices every
gate block of every kernel, recurrent kernel and bias, and the next layer's input rows.

As in ``compile_time.py``, floor and compile alternate (so drift hits both), after one warm-up of
each, with ``gc.collect()`` before every timed call; medians of 5:

* floor: ``keras.models.clone_model(model)`` plus ``set_weights(get_weights())``;
* compile: ``build_graph`` + ``plan`` + ``emit`` (slice mode), what ``prunec apply --no-verify``
  does between loading and saving.

Most of the floor is ``clone_model`` running the LSTMs' ``Orthogonal`` initialiser (a QR
decomposition of every 4096x1024 recurrent kernel) before ``set_weights`` overwrites the result;
``emit`` never runs initialisers. So a second floor is timed too, a clone whose variables are
created uninitialised and get the original's arrays directly (``compat.deferred_variables``, as
``emit`` does): the ratio against it says what the compile costs beyond a bare copy.
"""

from __future__ import annotations

import statistics
import sys

from common import machine

import keras  # noqa: E402  (common sets the environment first)

from compiler.api import parse_spec  # noqa: E402
from compiler.compat import deferred_variables, initialize_variable  # noqa: E402
from compile_time import REPEATS, compile_once, count_rebuilds, floor, timed  # noqa: E402

SPEC = "version: 1\nprune:\n  - type: LSTM\n    fraction: 0.5\n"


def lstm_stack(steps: int = 32, features: int = 256, units: int = 1024, depth: int = 4) -> keras.Model:
    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((steps, features), name="sequence")
    for i in range(depth):
        x = keras.layers.LSTM(units, return_sequences=i < depth - 1, name=f"lstm_{i + 1}")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(x), name="lstm_stack")


def bare_floor(model: keras.Model) -> keras.Model:
    """A clone without initialisers: each variable gets the original's array directly."""
    with deferred_variables() as created:
        clone = keras.models.clone_model(model)
    values = {id(v): w for v, w in zip(clone.weights, model.get_weights())}
    for variable in created.created:
        initialize_variable(variable, values.get(id(variable)))
    return clone


def main(argv: list[str]) -> None:
    steps = int(argv[0]) if argv else 32
    model = lstm_stack(steps)
    shrink = parse_spec(SPEC, "lstm_half.yaml")
    print(machine())
    print(f"model: 4 x LSTM(1024) on ({steps}, 256), {model.count_params():,} params; "
          f"spec: type LSTM, fraction 0.5; medians of {REPEATS} runs, seconds\n")
    compile_once(model, shrink)
    floor(model)
    bare_floor(model)
    floors, bares, runs = [], [], []
    for _ in range(REPEATS):
        floors.append(timed(lambda: floor(model))[0])
        bares.append(timed(lambda: bare_floor(model))[0])
        times, resolved, rebuilt = compile_once(model, shrink)
        runs.append(times)
    med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    floor_time, bare_time = statistics.median(floors), statistics.median(bares)
    header = ("model", "params before -> after", "floor", "bare floor", "graph", "plan", "emit",
              "compile", "ratio", "ratio (bare)", "rebuilds")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    row = ("4 x LSTM(1024)", f"{resolved.params[0]:,} -> {resolved.params[1]:,}", f"{floor_time:.2f}",
           f"{bare_time:.2f}", f"{med['graph']:.2f}", f"{med['plan']:.2f}", f"{med['emit']:.2f}",
           f"{med['compile']:.2f}", f"{med['compile'] / floor_time:.2f}x",
           f"{med['compile'] / bare_time:.2f}x", str(count_rebuilds(model, resolved)))
    print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
