"""Every Keras backend: the same spec gives the same plan bytes, lock and channels on
TensorFlow, JAX and PyTorch, and a chosen subset of the suite passes on JAX and PyTorch.

Each backend runs in its own subprocess (Keras fixes its backend at import). The whole suite
runs on the backend of this process (``KERAS_BACKEND``, tensorflow by default); on the other two
the core and CLI tests run (``SUBSET``): the graph, plan, emit and verify stages and
the command line, which is where a backend could differ.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

import models

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "jax", "torch")
MODULE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
SUBSET = ["tests/test_core.py", "tests/test_cli.py"]
HERE = os.environ.get("KERAS_BACKEND", "tensorflow")


def installed(backend: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(MODULE[backend]) is not None


def environment(backend: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONHASHSEED="0")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def prunec(backend: str, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compiler.cli", *map(str, argv)], cwd=ROOT,
                          env=environment(backend), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def shrunk(tmp_path_factory):
    """Per backend: the JSON plan, the lock, the apply output and the rebuilt model's layer
    widths of specs/mnist_shrink.yaml (criteria: L1 and L2 ranking) on one saved model."""
    folder = tmp_path_factory.mktemp("backends")
    models.mnist_cnn().save(folder / "mnist.keras")
    spec = ROOT / "specs" / "mnist_shrink.yaml"
    found = {}
    for backend in BACKENDS:
        if not installed(backend):
            continue
        plan = prunec(backend, "plan", spec, folder / "mnist.keras", "--format", "json",
                      "-o", folder / f"{backend}.json")
        lock = prunec(backend, "lock", spec, folder / "mnist.keras", "-o", folder / f"{backend}.lock")
        apply = prunec(backend, "apply", spec, folder / "mnist.keras", "-o",
                       folder / f"{backend}.keras")
        found[backend] = dict(runs=(plan, lock, apply),
                              plan=(folder / f"{backend}.json").read_bytes(),
                              lock=(folder / f"{backend}.lock").read_bytes())
    return folder, found


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_spec_gives_one_plan_and_lock_on_every_backend(shrunk, backend):
    folder, found = shrunk
    if backend not in found:
        pytest.skip(f"{backend} is not installed")
    for run in found[backend]["runs"]:
        assert (run.returncode, run.stderr) == (0, ""), run.stderr
    assert found[backend]["plan"] == found["tensorflow"]["plan"]
    assert found[backend]["lock"] == found["tensorflow"]["lock"]
    same = lambda text, name: re.sub(r"difference [0-9.e+-]+", "difference D",   # noqa: E731
                                     text.replace(f"{name}.keras", "X"))   # float round-off
    assert same(found[backend]["runs"][2].stdout, backend) == \
        same(found["tensorflow"]["runs"][2].stdout, "tensorflow")


def test_a_lock_from_one_backend_applies_on_another(shrunk):
    folder, found = shrunk
    others = [b for b in found if b != "tensorflow"]
    if not others:
        pytest.skip("only tensorflow is installed")
    spec = ROOT / "specs" / "mnist_shrink.yaml"
    run = prunec(others[0], "apply", spec, folder / "mnist.keras", "-o", folder / "locked.keras",
                 f"--locked={folder / 'tensorflow.lock'}")
    assert (run.returncode, run.stderr) == (0, "")
    assert "exactly as locked in" in run.stdout
    rebuilt = keras.saving.load_model(folder / "locked.keras")
    reference = keras.saving.load_model(folder / "tensorflow.keras")
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in reference.weights]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != HERE])
def test_the_core_subset_passes_on_the_other_backends(backend):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          *SUBSET], cwd=ROOT, env=environment(backend), capture_output=True,
                         text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
