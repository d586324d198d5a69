"""``prunec export`` (SavedModel, LiteRT, ONNX), ``apply --export`` beside -o, the one-line
error of a missing converter or of an artifact that computes something else, and ``prunec
bench``. Each artifact is also run here, by its own runtime on inputs of this file's choosing,
against the .keras model: not only through export's own check."""

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


def onnx_outputs(path, feed: dict) -> list:
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


@needs_tf
def test_onnx_export_computes_what_the_keras_model_computes(small, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code, stdout, err = run(capsys, "export", small, "--format", "onnx", "-o", out)
    assert (code, err) == (0, "")
    assert stdout.startswith(f"wrote {out}: onnx (verified against the .keras model, max "
                             "relative difference ")
    x = np.random.default_rng(2).standard_normal((5, 28, 28, 1)).astype("float32")
    (y,) = onnx_outputs(out, {"image": x})
    np.testing.assert_allclose(y, np.asarray(keras.saving.load_model(small)(x)),
                               rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]   # no temporary left


@needs_tf
def test_apply_export_onnx_of_a_pruned_model(small, tmp_path, capsys):
    out = tmp_path / "pruned.keras"
    code, stdout, err = run(capsys, "apply", SPEC, small, "-o", out, "--export", "onnx")
    assert (code, err) == (0, "")
    assert stdout.splitlines()[1].startswith(f"wrote {tmp_path / 'pruned.onnx'}: onnx (verified")
    pruned, original = keras.saving.load_model(out), keras.saving.load_model(small)
    assert pruned.count_params() < original.count_params()
    x = np.random.default_rng(3).standard_normal((4, 28, 28, 1)).astype("float32")
    (y,) = onnx_outputs(tmp_path / "pruned.onnx", {"image": x})
    np.testing.assert_allclose(y, np.asarray(pruned(x)), rtol=1e-4, atol=1e-5)
    import onnx
    graph = onnx.load(str(tmp_path / "pruned.onnx")).graph
    weights = sum(int(np.prod(t.dims)) for t in graph.initializer if len(t.dims) > 1)
    assert weights < original.count_params()      # the smaller weights, not a mask


@needs_tf
def test_onnx_inputs_are_fed_by_name(tmp_path):
    model = models.multi_input_model()       # inputs 'a' (6) and 'b' (4)
    difference = export_module.export(model, "onnx", tmp_path / "two.onnx")
    assert difference <= 1e-4
    rng = np.random.default_rng(4)
    a, b = (rng.standard_normal((3, n)).astype("float32") for n in (6, 4))
    (y,) = onnx_outputs(tmp_path / "two.onnx", {"b": b, "a": a})
    np.testing.assert_allclose(y, np.asarray(model([a, b])), rtol=1e-4, atol=1e-5)


def normalized() -> keras.Model:
    x = keras.Input((6, 6, 3), name="image")
    y = keras.layers.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 4.0])(x)
    y = keras.layers.Conv2D(4, 3, name="conv")(y)
    return keras.Model(x, keras.layers.GlobalAveragePooling2D()(y))


@needs_tf
def test_onnx_constants_captured_by_value_are_frozen(tmp_path):
    """A Normalization's mean and variance are tensors the traced model captures, which tf2onnx
    would leave as inputs to feed (EfficientNet's stem): they become initializers."""
    model = normalized()
    assert export_module.export(model, "onnx", tmp_path / "n.onnx") <= 1e-4
    import onnx
    assert [i.name for i in onnx.load(str(tmp_path / "n.onnx")).graph.input] == ["image"]
    image = np.random.default_rng(5).standard_normal((2, 6, 6, 3)).astype("float32")
    (y,) = onnx_outputs(tmp_path / "n.onnx", {"image": image})
    np.testing.assert_allclose(y, np.asarray(model(image)), rtol=1e-4, atol=1e-5)


@needs_tf
def test_an_onnx_model_with_other_inputs_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "_freeze_captured_constants", lambda model, path: None)
    out = tmp_path / "n.onnx"
    with pytest.raises(export_module.CompilerError) as error:
        export_module.export(normalized(), "onnx", out)
    assert str(error.value).startswith(f"{out}: the exported onnx model does not run: it takes 3 "
                                       "inputs (image, ")
    assert str(error.value).endswith("the Keras model 1; nothing was written (hint: the converter "
                                     "cannot translate this model to onnx: try another format, "
                                     "or KERAS_BACKEND=torch (torch.onnx translates what tf2onnx "
                                     "cannot, e.g. grouped convolutions))")
    assert list(tmp_path.iterdir()) == []


@needs_tf
def test_a_model_the_converter_cannot_translate_is_one_line(tmp_path, capsys):
    """TensorFlow runs a grouped convolution (ConvNeXt's depthwise) through XLA, which tf2onnx
    leaves as an op ONNX Runtime does not know."""
    x = keras.Input((8, 8, 4), name="image")
    keras.Model(x, keras.layers.Conv2D(4, 3, groups=2, name="grouped")(x)).save(
        tmp_path / "g.keras")
    out = tmp_path / "g.onnx"
    code, stdout, err = run(capsys, "export", tmp_path / "g.keras", "--format", "onnx", "-o", out)
    assert (code, stdout) == (1, "")
    assert err.startswith(f"error: {out}: the exported onnx model does not run: ")
    assert err.endswith("nothing was written (hint: the converter cannot translate this model "
                        "to onnx: try another format, or KERAS_BACKEND=torch (torch.onnx "
                        "translates what tf2onnx cannot, e.g. grouped convolutions))\n")
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.keras"]


@needs_tf
def test_a_litert_model_that_needs_flex_ops_says_so(tmp_path, capsys):
    x = keras.Input((5, 3), name="steps")
    keras.Model(x, keras.layers.LSTM(4, name="lstm")(x)).save(tmp_path / "r.keras")
    out = tmp_path / "r.tflite"
    code, stdout, err = run(capsys, "export", tmp_path / "r.keras", "--format", "litert", "-o", out)
    assert (code, stdout) == (1, "")
    assert err == (f"error: {out}: the exported litert model does not run: it needs TensorFlow "
                   "Select (Flex) ops, which the LiteRT interpreter runs only with the Flex delegate "
                   "(e.g. LSTM/GRU loops); nothing was written (hint: the converter cannot "
                   "translate this model to litert: try another format)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.keras"]


@needs_tf
def test_an_artifact_that_differs_is_not_written(small, tmp_path, capsys, monkeypatch):
    real = export_module._RUNNERS["onnx"]
    monkeypatch.setitem(export_module._RUNNERS, "onnx",
                        lambda path, named: [y + 1.0 for y in real(path, named)])
    out = tmp_path / "m.onnx"
    code, stdout, err = run(capsys, "export", small, "--format", "onnx", "-o", out)
    assert (code, stdout) == (3, "")
    assert err.startswith(f"error: {out}: the exported onnx model differs from the Keras model "
                          "(relative max difference ")
    assert err.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_a_missing_converter_is_one_line(small, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(export_module.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tf2onnx", "onnx", "onnxruntime") else real(name, *a))
    code, out, err = run(capsys, "export", small, "--format", "onnx", "-o", tmp_path / "m.onnx")
    assert (code, out) == (1, "")
    assert err == (f"error: {tmp_path / 'm.onnx'}: exporting to onnx needs tf2onnx, onnx, "
                   "onnxruntime, which are not installed (hint: pip install 'prunec[export]')\n")
    assert not (tmp_path / "m.onnx").exists()


@needs_tf
def test_batch_export_failing_leaves_nothing_of_that_model(small, tmp_path, capsys):
    """--out-dir with --export: the export is written before the .keras, so a model whose export
    fails (a grouped convolution tf2onnx cannot translate) has neither; the others have both."""
    folder = tmp_path / "models"
    folder.mkdir()
    x = keras.Input((8, 8, 4), name="image")
    y = keras.layers.Conv2D(8, 3, groups=2, name="grouped")(x)
    y = keras.layers.Dense(4, name="head")(keras.layers.GlobalAveragePooling2D()(y))
    keras.Model(x, y).save(folder / "grouped.keras")
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "apply", SPEC, small, folder / "grouped.keras",
                         "--out-dir", out_dir, "--export", "onnx")
    assert code == 1
    assert err.startswith(f"error: {folder / 'grouped.keras'}: {out_dir / 'grouped.onnx'}: the "
                          "exported onnx model does not run: ") and err.count("\n") == 1
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.keras", "model.onnx"]
    lines = out.splitlines()
    assert lines[0].split() == ["model", "params", "FLOPs", "export", "result"]
    assert lines[1].startswith(str(small)) and " onnx, verified (" in lines[1]
    assert lines[2].split()[1:5] == ["-", "-", "-", "FAILED:"]


def test_batch_export_needs_its_converter_once(small, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(export_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    code, out, err = run(capsys, "apply", SPEC, small, small.with_name("other.keras"),
                         "--out-dir", tmp_path / "out", "--export", "onnx")
    assert (code, out) == (1, "")
    assert err == (f"error: {tmp_path / 'out'}: exporting to onnx needs tf2onnx, which is not "
                   "installed (hint: pip install 'prunec[export]')\n")
    assert not (tmp_path / "out").exists()


def test_export_never_overwrites_its_input(small, capsys):
    code, out, err = run(capsys, "export", small, "--format", "litert", "-o", small)
    assert code == 1 and "refusing to overwrite the input model" in err


def test_export_needs_a_format_and_output(small, capsys):
    code, out, err = run(capsys, "export", small, "-o", "x")
    assert code == 2 and "--format" in err.splitlines()[-1]
    code, out, err = run(capsys, "apply", SPEC, small, "--out-dir", "d", "--export", "tflite")
    assert code == 2 and "argument --export: invalid choice: 'tflite'" in err.splitlines()[-1]


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
