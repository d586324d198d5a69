"""Local processes vs Ray for ``prunec apply SPEC MODELS... --out-dir DIR``.

Builds ``--small`` small CNNs (widths vary) and ``--apps`` keras.applications models (random
weights, small inputs), runs the same batch through ``--executor local --jobs J`` and
``--executor ray --jobs J`` (a local Ray instance), and reports from the ``--summary`` JSON:

* wall time and throughput (models/minute);
* work: the sum of per-model seconds inside the workers (load, plan, emit, verify, save);
* overhead per model: ``(wall × J − work) / models`` — worker start-up (a fresh process per model,
  importing Keras), scheduling, and for Ray its own start-up and task dispatch;
* throughput on paper for N workers: ``N / (work per model + overhead per model)``, assuming
  enough cores and a shared file system (no contention);
* the machine's load average before and after each run (``os.getloadavg``: the benchmark does
  not own the machine).

``--per-worker 1,10`` also runs each set with workers recycled after 10 models instead of 1 (the
start-up of a worker, importing Keras, is most of the overhead of a small model).

    python benchmarks/executors.py --small 50 --apps 10 --jobs 2 [--per-worker 1,10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ["MobileNet", "MobileNetV2", "ResNet50", "DenseNet121", "EfficientNetB0", "VGG16",
        "MobileNetV3Small", "ResNet50V2", "Xception", "NASNetMobile"]


def make_models(folder: Path, small: int, apps: int) -> tuple[list[str], list[str]]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    from keras import layers
    small_paths = []
    for i in range(small):
        width = 8 + 8 * (i % 4)
        x = keras.Input((32, 32, 3))
        y = layers.Conv2D(width, 3, activation="relu", name="conv1")(x)
        y = layers.Conv2D(2 * width, 3, activation="relu", name="conv2")(y)
        y = layers.GlobalAveragePooling2D()(y)
        y = layers.Dense(10, name="head")(y)
        path = folder / "small" / f"net{i:03d}.keras"
        path.parent.mkdir(parents=True, exist_ok=True)
        keras.Model(x, y).save(path)
        small_paths.append(str(path))
    app_paths = []
    for name in APPS[:apps]:
        size = 75 if name in ("Xception",) else 32
        kwargs = dict(weights=None, input_shape=(size, size, 3), classes=10)
        if name == "NASNetMobile":
            kwargs["input_shape"] = (224, 224, 3)
        model = getattr(keras.applications, name)(**kwargs)
        path = folder / "apps" / f"{name}.keras"
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        app_paths.append(str(path))
        keras.backend.clear_session()
    return small_paths, app_paths


def run(executor: str, models: list[str], out: Path, jobs: int, per_worker: int = 1) -> dict:
    summary = out.with_suffix(".json")
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "compiler.cli", "apply",
                           str(ROOT / "specs" / "family_quarter.yaml"), *models,
                           "--out-dir", str(out), "--executor", executor, "--jobs", str(jobs),
                           "--models-per-worker", str(per_worker),
                           "--summary", str(summary)], cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    data = json.loads(summary.read_text())
    work = sum(m["seconds"] or 0 for m in data["models"])
    n = len(models)
    overhead = max(0.0, (wall * jobs - work) / n)
    return {"executor": executor, "per_worker": per_worker, "models": n,
            "written": data["written"], "exit": done.returncode,
            "load": [round(load_before, 1), round(os.getloadavg()[0], 1)], "wall_s": round(wall, 1),
            "per_minute": round(60 * n / wall, 1), "work_per_model_s": round(work / n, 2),
            "overhead_per_model_s": round(overhead, 2),
            "paper_per_minute": {w: round(60 * w / (work / n + overhead), 1)
                                 for w in (2, 8, 32, 128)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--executors", default="local,ray")
    parser.add_argument("--per-worker", default="1", help="models per worker, e.g. 1,10")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        small, apps = make_models(folder, args.small, args.apps)
        for label, group in (("small", small), ("applications", apps)):
            if not group:
                continue
            for per_worker in [int(n) for n in args.per_worker.split(",")]:
                for executor in args.executors.split(","):
                    out = folder / f"out_{label}_{executor}_{per_worker}"
                    row = run(executor, group, out, args.jobs, per_worker)
                    print(json.dumps({"set": label, **row}), flush=True)


if __name__ == "__main__":
    main()
