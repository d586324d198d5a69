"""Importing Keras for a command-line process, without TensorFlow's chatter on the user's stderr.

Shared by the CLI and by batch worker processes (which start fresh under ``spawn`` and import
Keras again): errors stay one line each only if nothing else is printed to file descriptor 2.
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["import_keras_quietly", "quiet_stderr"]


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 points at /dev/null inside the block (converters' C++ logging)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _installed(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def import_keras_quietly() -> None:
    """Import Keras with TensorFlow's start-up banners (oneDNN, absl) kept off stderr.

    TensorFlow prints them from C++ straight to file descriptor 2 while it is imported, so that
    descriptor points at /dev/null for the import only.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "keras" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras  # noqa: F401
            if keras.backend.backend() != "tensorflow" and _installed("tensorflow"):
                # Keras on JAX or torch imports TensorFlow later, lazily (tf.data, export),
                # which would print the banners then: import it now, while they go nowhere.
                import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
