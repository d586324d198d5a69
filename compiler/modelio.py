"""Loading and writing model files: safe by default, atomic, never over the input.

Models load with Keras' ``safe_mode`` on, so a ``.keras`` file carrying serialized Python code (a
``Lambda``) is refused unless the user says they trust it. Output goes to a temporary file in the
target's directory and is renamed into place only when complete: a crash at any moment leaves the
old file or the new one, never half of either.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import keras

from .errors import ModelError

__all__ = ["load_model", "save_model"]


def load_model(path: str | os.PathLike, trust: bool = False) -> keras.Model:
    """Load a ``.keras``/``.h5`` model; ModelError with one line if it cannot be loaded."""
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise ModelError("model file not found", where, "check the path, or the spec's 'model:' key")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ModelError("model file is not a readable file", where)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not trust)
    except Exception as error:
        text = " ".join(str(error).split())
        if "safe_mode" in text or "unsafe" in text.lower():
            raise ModelError("the model contains serialized Python code (e.g. a Lambda layer), "
                             "which is not loaded by default because it could run anything", where,
                             "if you trust this file, pass --trust-model-code") from None
        raise ModelError(f"cannot load model: {text[:300]}", where) from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"file holds a {type(model).__name__}, not a Keras model", where)
    return model


def save_model(model: keras.Model, out: str | os.PathLike, protect: tuple = ()) -> None:
    """Write ``model`` to ``out`` atomically; refuse to overwrite any path in ``protect``."""
    out = Path(out)
    if out.suffix != ".keras":
        raise ModelError("output file must end in .keras", str(out))
    for other in protect:
        if other is not None and out.exists() and Path(other).exists() and out.samefile(other):
            raise ModelError("refusing to overwrite the input model", str(out),
                             "choose another output path with -o")
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise ModelError("output directory does not exist", str(out))
    handle, temporary = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".keras", dir=directory)
    os.close(handle)
    try:
        model.save(temporary)
        os.replace(temporary, out)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, Exception):
            raise ModelError(f"cannot write model: {error}", str(out)) from None
        raise
