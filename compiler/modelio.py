"""Loading and writing model files: safe by default, atomic, never over the input.

Models load with Keras' ``safe_mode`` on, so a ``.keras`` file carrying serialized Python code (a
``Lambda``) is refused unless the user says they trust it.

Output is written atomically and never over the input model (``files.replacing``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import keras

from .errors import ModelError, clip
from .files import replacing

__all__ = ["load_model", "save_model"]

_TRUST_HINT = "if you trust this file, pass --trust-model-code (trust=True in the Python API)"


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
        if "safe_mode=False" in text or "arbitrary code execution" in text:
            raise ModelError("the model contains serialized Python code (e.g. a Lambda layer), "
                             "which is not loaded by default because it could run anything", where,
                             _TRUST_HINT) from None
        unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
        if unknown:
            raise ModelError(f"the model uses '{unknown.group(1)}', which is not a Keras class and "
                             "was not registered in this process", where,
                             "import the module that defines it (decorated with "
                             "@keras.saving.register_keras_serializable) before loading; see "
                             "docs/custom-layers.md") from None
        if path.suffix.lower() in (".yaml", ".yml", ".lock", ".json"):
            raise ModelError("this is not a model file", where, "give a .keras or .h5 model here "
                             "(commands take SPEC first: 'prunec plan SPEC MODEL', but "
                             "'prunec graph MODEL [SPEC]')") from None
        raise ModelError(f"cannot load model: {clip(text, 300)}", where) from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"file holds a {type(model).__name__}, not a Keras model", where)
    return model


def save_model(model: keras.Model, out: str | os.PathLike,
               protect: str | os.PathLike | Mapping | None = None) -> None:
    """Write ``model`` to ``out`` atomically (``files.replacing``); never over ``protect``, the
    input model's path or ``{"the spec": path, ...}`` (every input), however spelled."""
    out = Path(out)
    if out.suffix != ".keras":
        raise ModelError("output file must end in .keras", str(out))
    if not isinstance(protect, Mapping):
        protect = {"the input model": protect}
    with replacing(out, ModelError, protect) as temporary:
        try:
            model.save(temporary)
        except Exception as error:  # Keras raises many types (OSError among them): one line
            text = clip(" ".join(str(error).split()), 300)
            raise ModelError(f"cannot write model: {text}", str(out)) from None
