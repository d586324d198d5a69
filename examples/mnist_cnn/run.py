"""The seed example end to end: train the MNIST-style CNN, prune it with checked-in specs, compare.

Data: scikit-learn's bundled handwritten digits (1,797 8x8 images, shipped inside the package, so
nothing is downloaded), resized to 28x28 to fit the seed model. The pruning runs through the real
``prunec`` command line (in-process), exactly as a user would type it.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from compiler.runtime import import_keras_quietly

import_keras_quietly()            # TensorFlow's start-up banners stay off the demo's output

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from compiler.cli import main as prunec  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "out"
SPECS = ("specs/mnist_fc1.yaml", "specs/mnist_shrink.yaml")


def digits_28x28(seed: int = 0):
    """Bundled 8x8 digits, scaled to [0, 1], bilinearly resized to 28x28, split 80/20."""
    digits = load_digits()
    images = digits.images.astype("float32")[..., None] / 16.0
    images = keras.ops.convert_to_numpy(keras.ops.image.resize(images, (28, 28)))
    order = np.random.default_rng(seed).permutation(len(images))
    images, labels = images[order], digits.target[order]
    split = int(0.8 * len(images))
    return (images[:split], labels[:split]), (images[split:], labels[split:])


def seed_model(classes: int = 10) -> keras.Model:
    """The model from the question: Conv(32,5) -> Pool -> Conv(64,5) -> Pool -> Flatten -> 512 -> 10."""
    conv = dict(kernel_size=5, padding="same", activation="relu")
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, name="conv1", **conv),
        keras.layers.MaxPooling2D(2, padding="same", name="pool1"),
        keras.layers.Conv2D(64, name="conv2", **conv),
        keras.layers.MaxPooling2D(2, padding="same", name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(512, activation="relu", name="fc1"),
        keras.layers.Dense(classes, name="fc2"),
    ], name="mnist_cnn")


def accuracy(model: keras.Model, images, labels) -> float:
    predictions = np.argmax(keras.ops.convert_to_numpy(model(images, training=False)), axis=-1)
    return float(np.mean(predictions == labels))


def run(command: str) -> None:
    print(f"\n$ prunec {command}", flush=True)
    status = prunec(shlex.split(command))
    if status != 0:
        sys.exit(f"prunec exited with {status}")


def main() -> None:
    os.chdir(ROOT)
    keras.utils.set_random_seed(0)
    (train_x, train_y), (test_x, test_y) = digits_28x28()
    model = seed_model()
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    print(f"training the seed CNN on {len(train_x)} digits (28x28), testing on {len(test_x)}")
    model.fit(train_x, train_y, epochs=4, batch_size=32, verbose=2)
    OUT.mkdir(exist_ok=True)
    original_path = OUT / "mnist_cnn.keras"
    model.save(original_path)
    rows = [("original", model.count_params(), accuracy(model, test_x, test_y))]

    for spec in SPECS:
        pruned_path = OUT / (Path(spec).stem + ".keras")
        run(f"validate {spec}")
        run(f"plan {spec}")
        run(f"apply {spec} -o {pruned_path.relative_to(ROOT)}")
        pruned = keras.saving.load_model(pruned_path)
        rows.append((spec, pruned.count_params(), accuracy(pruned, test_x, test_y)))

    print("\nmodel                     params    test accuracy")
    for name, params, acc in rows:
        print(f"{name:<24}  {params:>8}  {acc:.4f}")


if __name__ == "__main__":
    main()
