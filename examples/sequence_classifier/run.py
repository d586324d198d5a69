"""A Bidirectional-LSTM sequence classifier end to end: train, prune half its units, compare.

Data: scikit-learn's bundled handwritten digits (1,797 8x8 images, shipped inside the package, so
nothing is downloaded), each read as a sequence of 8 time steps (rows) of 8 features (pixels).
Model: two Bidirectional LSTMs (64 then 32 units per direction) and a small Dense head. The
pruning runs through the real ``prunec`` command line (in-process) with ``specs/bilstm_half.yaml``;
the table compares params, FLOPs (from the plan), test accuracy and CPU latency (median
``predict_on_batch`` time) of the original, the pruned model as emitted, and the pruned model after
two epochs of fine-tuning.
"""

from __future__ import annotations

import os
import shlex
import statistics
import sys
import time
from pathlib import Path

from compiler.runtime import import_keras_quietly

import_keras_quietly()            # TensorFlow's start-up banners stay off the demo's output

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from compiler.api import load_spec, plan  # noqa: E402
from compiler.cli import main as prunec  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "out"
SPEC = "specs/bilstm_half.yaml"


def digit_sequences(seed: int = 0):
    """Bundled 8x8 digits scaled to [0, 1], as (8 steps, 8 features) sequences, split 80/20."""
    digits = load_digits()
    sequences = digits.images.astype("float32") / 16.0
    order = np.random.default_rng(seed).permutation(len(sequences))
    sequences, labels = sequences[order], digits.target[order]
    split = int(0.8 * len(sequences))
    return (sequences[:split], labels[:split]), (sequences[split:], labels[split:])


def classifier(classes: int = 10) -> keras.Model:
    inputs = keras.Input((8, 8), name="rows")
    x = keras.layers.Bidirectional(keras.layers.LSTM(64, return_sequences=True, name="lstm"),
                                   name="bilstm_1")(inputs)
    x = keras.layers.Bidirectional(keras.layers.LSTM(32, name="lstm"), name="bilstm_2")(x)
    x = keras.layers.Dense(64, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x), name="bilstm_digits")


def compiled(model: keras.Model) -> keras.Model:
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def accuracy(model: keras.Model, sequences, labels) -> float:
    predictions = np.argmax(keras.ops.convert_to_numpy(model(sequences, training=False)), axis=-1)
    return float(np.mean(predictions == labels))


def latencies_ms(models: list[keras.Model], batch: np.ndarray, repeats: int = 100) -> list[float]:
    """Median wall time of one ``predict_on_batch`` per model on the CPU, after warm-up; the
    models take turns, so a busy moment of the machine hits all of them alike."""
    times = [[] for _ in models]
    for model in models:
        for _ in range(5):
            model.predict_on_batch(batch)
    for _ in range(repeats):
        for model, spent in zip(models, times):
            start = time.perf_counter()
            model.predict_on_batch(batch)
            spent.append(time.perf_counter() - start)
    return [1000 * statistics.median(spent) for spent in times]


def run(command: str) -> None:
    print(f"\n$ prunec {command}", flush=True)
    status = prunec(shlex.split(command))
    if status != 0:
        sys.exit(f"prunec exited with {status}")


def main() -> None:
    os.chdir(ROOT)
    keras.utils.set_random_seed(0)
    (train_x, train_y), (test_x, test_y) = digit_sequences()
    model = compiled(classifier())
    print(f"training the Bidirectional-LSTM classifier on {len(train_x)} digit sequences (8 steps "
          f"of 8 pixels), testing on {len(test_x)}")
    model.fit(train_x, train_y, epochs=12, batch_size=32, verbose=2)
    OUT.mkdir(exist_ok=True)
    original_path, pruned_path = OUT / "bilstm_digits.keras", OUT / "bilstm_half.keras"
    model.save(original_path)

    run(f"validate {SPEC}")
    run(f"plan {SPEC}")
    run(f"apply {SPEC} -o {pruned_path.relative_to(ROOT)}")
    pruned = keras.saving.load_model(pruned_path)
    flops = plan(model, load_spec(SPEC)).flops

    tuned = compiled(keras.saving.load_model(pruned_path))
    tuned.fit(train_x, train_y, epochs=2, batch_size=32, verbose=0)
    rows = [("original", model, flops[0]), ("pruned (as emitted)", pruned, flops[1]),
            ("pruned + 2 epochs", tuned, flops[1])]
    models = [m for _, m, _ in rows]
    single, batched = latencies_ms(models, test_x[:1]), latencies_ms(models, test_x[:64])

    print("\nmodel                   params      FLOPs  test accuracy  latency b=1  latency b=64")
    for (name, m, f), one, many in zip(rows, single, batched):
        print(f"{name:<20}  {m.count_params():>8,}  {f:>9,}  {accuracy(m, test_x, test_y):>13.4f}  "
              f"{one:>8.2f} ms  {many:>9.2f} ms")


if __name__ == "__main__":
    main()
