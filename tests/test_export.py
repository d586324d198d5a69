"""``prunec export`` (SavedModel, LiteRT; ONNX when its converter is installed), ``apply
--export`` beside -o, the one-line error of a missing converter, and ``prunec bench``."""

import importlib.util
import os
from pathlib import Path

import keras
import numpy as np
import pytest

import models
from clirun import run
from compiler import export as export_module

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "family_quarter.yaml"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    models.mnist_cnn().save(folder / "model.keras")
    return folder / "model.keras"


needs_tf = pytest.mark.skipif(keras.backend.backend() != "tensorflow" or
                              importlib.util.find_spec("tensorflow") is None,
                              reason="SavedModel/LiteRT export run on the tensorflow backend here")


@needs_tf
def test_saved_model_export_is_checked_and_loads(small, tmp_path, capsys):
    out = tmp_path / "sm"
    code, stdout, err = run(capsys, "export", small, "--format", "saved_model", "-o", out)
    assert (code, err) == (0, "")
    assert stdout.startswith(f"wrote {out}: saved_model (verified against the .keras model, max "
                             "relative difference ")
    import tensorflow as tf
    x = np.random.default_rng(1).standard_normal((3, 28, 28, 1)).astype("float32")
    model = keras.saving.load_model(small)
    loaded = tf.saved_model.load(str(out))
    np.testing.assert_allclose(np.asarray(loaded.serve(x)),
                               np.asarray(model(x)), rtol=1e-4, atol=1e-5)
    code, _, _ = run(capsys, "export", small, "--format", "saved_model", "-o", out)  # replaces it
    assert code == 0 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@needs_tf
def test_apply_export_litert_writes_beside_the_model(small, tmp_path, capsys):
    out = tmp_path / "pruned.keras"
    code, stdout, err = run(capsys, "apply", SPEC, small, "-o", out, "--export", "litert")
    assert (code, err) == (0, "")
    assert stdout.splitlines()[1].startswith(f"wrote {tmp_path / 'pruned.tflite'}: litert (verified")
    assert (tmp_path / "pruned.tflite").stat().st_size > 0


def test_a_missing_converter_is_one_line(small, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(export_module.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tf2onnx", "onnx", "onnxruntime") else real(name, *a))
    code, out, err = run(capsys, "export", small, "--format", "onnx", "-o", tmp_path / "m.onnx")
    assert (code, out) == (1, "")
    assert err == (f"error: {tmp_path / 'm.onnx'}: exporting to onnx needs tf2onnx, onnx, "
                   "onnxruntime, which are not installed (hint: pip install 'prunec[export]')\n")
    assert not (tmp_path / "m.onnx").exists()


def test_export_never_overwrites_its_input(small, capsys):
    code, out, err = run(capsys, "export", small, "--format", "litert", "-o", small)
    assert code == 1 and "refusing to overwrite the input model" in err


def test_export_needs_a_format_and_output(small, capsys):
    code, out, err = run(capsys, "export", small, "-o", "x")
    assert code == 2 and "--format" in err.splitlines()[-1]
    code, out, err = run(capsys, "apply", SPEC, small, "--out-dir", "d", "--export", "litert")
    assert code == 2 and err.splitlines()[-1].endswith("--export writes beside -o OUT.keras: give -o")


def test_bench_table(small, tmp_path, capsys):
    pruned = tmp_path / "pruned.keras"
    assert run(capsys, "apply", SPEC, small, "-o", pruned)[0] == 0
    code, out, err = run(capsys, "bench", small, pruned, "--repeats", "3", "--warmup", "1",
                         "--batches", "1,4")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["model", "params", "size", "batch", "1", "batch", "4"]
    assert lines[1].startswith(str(small)) and lines[2].startswith(str(pruned))
    assert lines[3].startswith("original / pruned") and lines[3].count("x") == 4
    assert lines[4].startswith("median latency per call on this CPU")
    size = os.path.getsize(small) / 1e6
    assert f"{size:.2f} MB" in lines[1]
    code, out, err = run(capsys, "bench", small, "--batches", "1,x")
    assert code == 1 and err.startswith("error: --batches: --batches takes positive integers")
