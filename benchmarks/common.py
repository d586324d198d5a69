"""What the benchmark scripts share: the families at their default input sizes, and timing.

Every model is built with ``weights=None`` (nothing is downloaded) and an explicit default input
shape (MobileNetV3's default is fully dynamic, which would leave FLOPs unknown).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402

__all__ = ["FAMILIES", "build", "machine", "selected", "spec", "ROOT"]

A = keras.applications
FAMILIES = {
    "VGG16": (A.VGG16, 224), "ResNet50": (A.ResNet50, 224), "ResNet50V2": (A.ResNet50V2, 224),
    "MobileNet": (A.MobileNet, 224), "MobileNetV2": (A.MobileNetV2, 224),
    "MobileNetV3Small": (A.MobileNetV3Small, 224), "DenseNet121": (A.DenseNet121, 224),
    "InceptionV3": (A.InceptionV3, 299), "Xception": (A.Xception, 299),
    "EfficientNetB0": (A.EfficientNetB0, 224), "EfficientNetV2B0": (A.EfficientNetV2B0, 224),
    "NASNetMobile": (A.NASNetMobile, 224), "ConvNeXtTiny": (A.ConvNeXtTiny, 224),
}


def build(name: str) -> keras.Model:
    constructor, side = FAMILIES[name]
    keras.utils.set_random_seed(0)
    return constructor(weights=None, input_shape=(side, side, 3))


def spec(name: str):
    from compiler.api import load_spec
    return load_spec(ROOT / "specs" / name)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import tensorflow
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"TensorFlow {tensorflow.__version__}, Keras {keras.__version__}, NumPy {numpy.__version__}")


def selected(argv: list[str]) -> list[str]:
    names = argv or list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    return names
