"""Deployment formats: ``prunec export MODEL.keras --format litert|onnx|saved_model -o PATH``.

Export goes through Keras' own ``model.export`` (no converter of prunec's own), then the artifact
is loaded back with its runtime — ``tf.saved_model.load``, the LiteRT interpreter, ONNX Runtime —
and run on the random inputs verification uses: it must compute what the Keras model computes
(relative max difference ≤ 1e-4) or nothing is written. The artifact goes to a temporary path
beside ``PATH`` and is renamed into place, like every prunec output.

Converters are optional extras: SavedModel and LiteRT need TensorFlow (``prunec[tensorflow]``),
ONNX needs ``tf2onnx`` (1.17 or later: 1.16 pins protobuf 3, which TensorFlow 2.21 cannot use)
and ``onnx``, and ONNX Runtime for the check (``prunec[export]``); on the torch backend Keras
converts with ``torch.onnx``, on jax with ``jax2onnx``. A missing one is a one-line error.
Keras' ONNX export refuses a model that was never called, so the model runs on the check's
inputs first (a loaded functional model has not been called).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np

from .errors import CompilerError, VerificationError, clip
from .files import replacing, same_file
from .verify import random_inputs, relative_difference

__all__ = ["FORMATS", "export", "beside", "check_converter"]

# our name -> (Keras' format name, suffix beside a .keras file, modules it needs, the extra)
FORMATS = {
    "saved_model": ("tf_saved_model", "_saved_model", ("tensorflow",), "prunec[tensorflow]"),
    "litert": ("litert", ".tflite", ("tensorflow",), "prunec[tensorflow]"),
    "onnx": ("onnx", ".onnx", ("tf2onnx", "onnx", "onnxruntime"), "prunec[export]"),
}
TOLERANCE = 1e-4


def beside(keras_path: str, fmt: str) -> str:
    """Where ``apply --export FORMAT`` writes: ``OUT.tflite``, ``OUT.onnx``, ``OUT_saved_model/``."""
    path = Path(keras_path)
    return str(path.with_name(path.stem + FORMATS[fmt][1]))


def check_converter(fmt: str, out: str) -> None:
    """Raise (one line: what is missing, what to install) unless ``fmt`` can be exported here."""
    _, _, modules, extra = FORMATS[fmt]
    backend = keras.backend.backend()
    hint = f"pip install '{extra}'"
    if fmt == "litert" and backend == "torch":
        modules, hint = ("litert_torch",), "pip install litert-torch"
    elif fmt == "onnx" and backend == "torch":      # torch.onnx converts; onnx, ORT check
        modules = ("onnx", "onnxruntime")
    elif fmt == "onnx" and backend == "jax":
        modules = ("jax2onnx", "onnxruntime")
        hint = "pip install jax2onnx onnxruntime, or run with KERAS_BACKEND=tensorflow"
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise CompilerError(f"exporting to {fmt} needs {', '.join(missing)}, which "
                            f"{'is' if len(missing) == 1 else 'are'} not installed", out, hint)
    if fmt == "litert" and backend == "jax":
        raise CompilerError("Keras exports LiteRT from the tensorflow or torch backend only", out,
                            "run with KERAS_BACKEND=tensorflow")


def export(model: keras.Model, fmt: str, out: str | os.PathLike, check: bool = True,
           protect: dict | None = None) -> float | None:
    """Write ``model`` as ``fmt`` to ``out``; return the checked relative difference (None when
    ``check`` is False). Raises ``VerificationError`` (nothing written) if the artifact differs."""
    out = str(out)
    if fmt not in FORMATS:
        raise CompilerError(f"unknown export format '{fmt}'", out,
                            f"choose one of {', '.join(FORMATS)}")
    check_converter(fmt, out)
    for what, other in (protect or {}).items():
        if other is not None and same_file(Path(out), Path(other)):
            raise CompilerError(f"refusing to overwrite {what}", out, "choose another -o")
    if fmt == "saved_model":
        return _export_directory(model, out, check)
    with replacing(out, CompilerError) as temporary:
        return _export_and_check(model, fmt, temporary, check, out)


def _export_directory(model, out: str, check: bool) -> float | None:
    """A SavedModel is a directory: build it beside ``out``, then swap it into place."""
    target = Path(out)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise CompilerError("output directory does not exist", out)
    if target.exists() and not (target / "saved_model.pb").exists():
        raise CompilerError("exists and is not a SavedModel: refusing to replace it", out,
                            "choose another -o")
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.prunec-", dir=parent))
    try:
        difference = _export_and_check(model, "saved_model", str(building / "model"), check, out)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.replace(target, old / "model")
        os.replace(building / "model", target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return difference
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _export_and_check(model, fmt: str, path: str, check: bool, out: str) -> float | None:
    from .runtime import quiet_stderr
    if fmt == "onnx" and os.path.exists(path):
        os.unlink(path)                 # tf2onnx refuses to write over the empty temporary
    # Run the model first: the random inputs and outputs are the check's, and Keras' ONNX export
    # refuses a model never called (a loaded functional model has not been).
    feed = random_inputs(model, batch=1 if fmt == "litert" else 2)    # as the model takes them
    expected = model(feed, training=False)
    try:
        with quiet_stderr(), warnings.catch_warnings():   # converters' deprecation notes
            warnings.simplefilter("ignore")
            model.export(path, format=FORMATS[fmt][0], verbose=False)
            if fmt == "onnx" and keras.backend.backend() == "tensorflow":
                _freeze_captured_constants(model, path)
    except CompilerError:
        raise
    except Exception as error:   # the converter's own failure: one line, not a traceback
        raise CompilerError(f"Keras could not export to {fmt}: "
                            f"{clip(' '.join(str(error).split()), 300)}", out) from None
    if not check:
        return None
    inputs = list(feed.values()) if isinstance(feed, dict) else \
        list(feed) if isinstance(feed, (list, tuple)) else [feed]
    names = list(feed) if isinstance(feed, dict) else [t.name for t in model.inputs]
    try:
        with quiet_stderr():
            actual = _RUNNERS[fmt](path, dict(zip(names, inputs)) if len(names) == len(inputs)
                                   else dict(enumerate(inputs)))
    except CompilerError:
        raise
    except Exception as error:   # e.g. an op the converter left untranslated
        text = " ".join(str(error).replace(path, out).split())
        if "Select TensorFlow op" in text:      # LiteRT without its Flex delegate: say it plainly
            text = ("it needs TensorFlow Select (Flex) ops, which the LiteRT interpreter runs only "
                    "with the Flex delegate (e.g. LSTM/GRU loops)")
        other = " (torch.onnx translates what tf2onnx cannot, e.g. grouped convolutions)" \
            if fmt == "onnx" and keras.backend.backend() == "tensorflow" else ""
        raise CompilerError(f"the exported {fmt} model does not run: {clip(text, 300)}; "
                            "nothing was written", out, "the converter cannot translate this "
                            f"model to {fmt}: try another format" +
                            (", or KERAS_BACKEND=torch" + other if other else "")) from None
    outputs = len(keras.tree.flatten(expected))
    if len(actual) != outputs:
        raise VerificationError(f"the exported {fmt} model has {len(actual)} outputs, the Keras "
                                f"model {outputs}; nothing was written", out,
                                "the converter changed the model's outputs: report it, or try "
                                "another format")
    difference = relative_difference(expected, actual)
    if not np.isfinite(difference) or difference > TOLERANCE:
        raise VerificationError(
            f"the exported {fmt} model differs from the Keras model (relative max difference "
            f"{difference:.3g} > {TOLERANCE:g}); nothing was written", out,
            "the converter changed what the model computes: report it, or try another format")
    return difference


def _freeze_captured_constants(model, path: str) -> None:
    """Make the constants tf2onnx left as graph inputs initializers holding their values.

    tf2onnx freezes the variables a traced model reads, but a tensor it captures by value (a
    Normalization layer's mean and variance, computed once when it is built, as in EfficientNet's
    stem) becomes one more input the caller would have to feed. The model is traced again the way
    Keras' export traces it, and each such input gets the captured value under the same name.
    """
    import onnx
    proto = onnx.load(path)
    extra = [i.name for i in proto.graph.input][len(model.inputs):]
    if not extra:
        return
    import tensorflow as tf
    archive = keras.export.ExportArchive()
    traced = archive.track_and_add_endpoint("serve", model, [model.input]).get_concrete_function()
    captured = traced.captured_inputs
    values = {t.name: np.asarray(v) for t, v in zip(traced.inputs[-len(captured):], captured)
              if v.dtype != tf.resource} if captured else {}
    if not set(extra) <= set(values):
        return          # not ours to fix: the check fails on the inputs it cannot feed
    kept = [i for i in proto.graph.input if i.name not in values]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    proto.graph.initializer.extend(onnx.numpy_helper.from_array(values[name], name)
                                   for name in extra)
    onnx.save(proto, path)


def _run_saved_model(path: str, named: dict):
    import tensorflow as tf
    inputs = list(named.values())
    loaded = tf.saved_model.load(path)
    result = loaded.serve(*inputs)
    return [np.asarray(t) for t in (result if isinstance(result, (list, tuple)) else
                                    (result.values() if isinstance(result, dict) else [result]))]


def _run_litert(path: str, named: dict):
    inputs = list(named.values())
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():     # tf.lite.Interpreter's deprecation note
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_path=path)
    details = interpreter.get_input_details()
    for detail, array in zip(details, inputs):
        if list(detail["shape"]) != list(array.shape):
            interpreter.resize_tensor_input(detail["index"], array.shape)
    interpreter.allocate_tensors()
    for detail, array in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], array.astype(detail["dtype"]))
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def _run_onnx(path: str, named: dict):
    """ONNX Runtime on ``named`` (input name -> array): by name when the exported inputs keep
    the model's names (Keras passes them to the converter), else in order."""
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]
    if len(wanted) != len(named):
        raise ValueError(f"it takes {len(wanted)} inputs ({', '.join(wanted)}), the Keras "
                         f"model {len(named)}")
    feed = {n: named[n] for n in wanted} if set(wanted) == set(named) else \
        dict(zip(wanted, named.values()))
    return session.run(None, feed)


_RUNNERS = {"saved_model": _run_saved_model, "litert": _run_litert, "onnx": _run_onnx}
