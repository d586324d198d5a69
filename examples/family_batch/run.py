"""One spec over a family of models: rewrite several keras.applications CNNs with one command.

Builds five architectures (randomly initialised, ``weights=None``: nothing is downloaded) at
64x64 with 10 classes, saves them, and runs, exactly as a user would type it::

    prunec apply specs/family_quarter.yaml examples/family_batch/out/models/*.keras \
        --out-dir examples/family_batch/out/pruned --jobs 2

The spec removes a quarter of every Conv2D's filters by L1 magnitude within each coupled set, so
one file handles residual adds (ResNet50), squeeze-excite multiplies (EfficientNetB0), dense
concatenations (DenseNet121) and depthwise blocks (MobileNet, MobileNetV2) alike. Every rebuilt
model is verified against its original before it is written; the summary table at the end says
which were, with parameters and FLOPs before and after.

Run from anywhere: ``python examples/family_batch/run.py [--jobs N]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from compiler.runtime import import_keras_quietly  # noqa: E402

import_keras_quietly()

import keras  # noqa: E402

from compiler.cli import main as prunec  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "out"
SPEC = "specs/family_quarter.yaml"
SHAPE = (64, 64, 3)
FAMILY = {
    "mobilenet": lambda: keras.applications.MobileNet(alpha=0.5, **_common()),
    "mobilenet_v2": lambda: keras.applications.MobileNetV2(alpha=0.5, **_common()),
    "efficientnet_b0": lambda: keras.applications.EfficientNetB0(**_common()),
    "densenet121": lambda: keras.applications.DenseNet121(**_common()),
    "resnet50": lambda: keras.applications.ResNet50(**_common()),
}


def _common() -> dict:
    return dict(weights=None, input_shape=SHAPE, classes=10)


def build_family(folder: Path) -> list[Path]:
    """Save every model of the family (seeded: the same weights on every run)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in FAMILY.items():
        path = folder / f"{name}.keras"
        if not path.exists():
            keras.utils.set_random_seed(0)
            model = build()
            model.save(path)
            print(f"saved {path.relative_to(ROOT)}: {model.count_params()} params")
        paths.append(path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="models rebuilt at a time (default 2)")
    args = parser.parse_args()
    os.chdir(ROOT)
    models = build_family(OUT / "models")
    command = ["apply", SPEC, *(str(p.relative_to(ROOT)) for p in models),
               "--out-dir", str((OUT / "pruned").relative_to(ROOT)), "--jobs", str(args.jobs)]
    print(f"\n$ prunec {' '.join(command)}", flush=True)
    started = time.monotonic()
    status = prunec(command)
    print(f"({time.monotonic() - started:.0f}s, exit code {status})")
    return status


if __name__ == "__main__":   # the guard matters: --jobs starts worker processes with 'spawn'
    sys.exit(main())
