"""Accuracy against FLOPs kept: l1, activation, taylor (uniform per-layer fractions) and a global
LAMP-ranked target, before and after one epoch of fine-tuning.

Data: scikit-learn's bundled 8x8 digits (1,797 images shipped inside the scikit-learn wheel;
nothing is downloaded), upscaled to 16x16, split 1,397 train / 400 test with a fixed seed. A
small CNN (3 conv+BN+ReLU blocks, a Dense head) is trained here. Every number is measured on the
400 test images; scoring data and fine-tuning use the training images only.

    python examples/accuracy_study/run.py        # writes results.md, results.json, results.png
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from compiler import api  # noqa: E402
from compiler.data import as_data  # noqa: E402
from compiler.evaluate import evaluate  # noqa: E402
from compiler.finetune import finetune  # noqa: E402
from compiler.spec import parse_spec  # noqa: E402

KEEP = (0.9, 0.7, 0.5, 0.3)
METHODS = ("l1", "activation", "taylor", "target (l1, LAMP)", "target (taylor, LAMP)")
LOSS = "sparse_categorical_crossentropy"


def data():
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")
    x = np.kron(x, np.ones((2, 2), dtype="float32"))[..., None]          # 16x16x1
    y = digits.target.astype("int64")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1397], y[:1397]), (x[1397:], y[1397:])


def cnn():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = inputs
    for i, filters in enumerate((32, 64, 64), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if i < 3:
            x = layers.MaxPooling2D(name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    out = layers.Dense(10, activation="softmax", name="out")(x)
    model = keras.Model(inputs, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS, metrics=["accuracy"])
    return model


RULES = "  - type: Conv2D\n{amount}  - layer: fc1\n{amount}"


def spec_for(method: str, keep: float, model, scoring) -> tuple:
    head = f"version: 1\nloss: {LOSS}\n"
    if method.startswith("target"):
        criterion = method.split("(")[1].split(",")[0]
        text = head + f"target: {{flops: {keep}}}\nprune:\n" + RULES.format(
            amount=f"    criterion: {criterion}\n")
        spec = parse_spec(text, "study.yaml")
        return spec, api.plan(model, spec, data=scoring)
    best = None                    # the smallest uniform fraction whose FLOPs are <= keep
    for fraction in np.arange(0.02, 0.99, 0.02):
        text = head + "prune:\n" + RULES.format(
            amount=f"    fraction: {fraction:.2f}\n    criterion: {method}\n")
        spec = parse_spec(text, "study.yaml")
        resolved = api.plan(model, spec, data=scoring if method != "l1" else None)
        if resolved.flops[1] <= keep * resolved.flops[0]:
            best = (spec, resolved)
            break
    return best


def main() -> None:
    (x, y), (xt, yt) = data()
    model = cnn()
    model.fit(x, y, epochs=15, batch_size=32, verbose=0, validation_split=0.0)
    path = os.path.join(HERE, "digits_cnn.keras")    # prunec rebuilds models as loaded from files
    model.save(path)
    model = api.load_model(path)
    test = as_data((xt, yt), batch_size=100)
    scoring = as_data((x[:512], y[:512]), batch_size=64)
    train = as_data((x, y), batch_size=32)
    base = evaluate(model, test)["accuracy"]
    print(f"original: test accuracy {base:.4f}")
    rows = []
    for method in METHODS:
        for keep in KEEP:
            spec, resolved = spec_for(method, keep, model, scoring)
            rebuilt, _, _ = api.rebuild(model, resolved)
            pruned = evaluate(rebuilt, test)["accuracy"]
            finetune(rebuilt, train, 1, {}, None, LOSS)   # default: Adam, 1e-4
            tuned = evaluate(rebuilt, test)["accuracy"]
            kept = resolved.flops[1] / resolved.flops[0]
            rows.append({"method": method, "target": keep, "flops_kept": kept, "pruned": pruned,
                         "finetuned": tuned})
            print(f"{method:22s} target {keep:.0%}: FLOPs kept {kept:.3f}, accuracy {pruned:.4f} "
                  f"-> {tuned:.4f} after 1 epoch")
    with open(os.path.join(HERE, "results.json"), "w") as stream:
        json.dump({"original": base, "rows": rows}, stream, indent=2)
    lines = [f"Original test accuracy: **{base:.4f}** (400 test images).", "",
             "| method | FLOPs kept | pruned | + 1 epoch |", "|---|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['flops_kept']:.1%} | {r['pruned']:.4f} | {r['finetuned']:.4f} |"
              for r in rows]
    with open(os.path.join(HERE, "results.md"), "w") as stream:
        stream.write("\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key, title in zip(axes, ("pruned", "finetuned"), ("pruned", "after 1 epoch fine-tuning")):
        for method in METHODS:
            points = [(r["flops_kept"], r[key]) for r in rows if r["method"] == method]
            ax.plot(*zip(*points), marker="o", label=method)
        ax.axhline(base, color="grey", linestyle=":", label="original")
        ax.set_xlabel("FLOPs kept")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(HERE, "results.png"), dpi=110)
    print("wrote results.md, results.json, results.png")


if __name__ == "__main__":
    main()
