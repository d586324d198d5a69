"""Loading and writing model files: safe by default, bounded, atomic, never over the input.

Models load with Keras' ``safe_mode`` on, so a ``.keras`` file carrying serialized Python code (a
``Lambda``) is refused unless the user says they trust it.

A ``.keras`` file is a zip archive, and its central directory declares every member's size before
anything is read: an archive is refused, before Keras sees it, when it is not a zip at all, holds a
member whose name escapes the archive (``../x``, ``/etc/x``), more than ``members`` members, a
``config.json`` larger than ``config_bytes``, or more than ``total_bytes`` in all, or expands to
more than ``expansion`` times its own size (Keras stores weights uncompressed: a real model
expands about 1x). Each limit is overridable (``Limits.from_environment``): ``PRUNEC_MAX_MODEL_BYTES``,
``PRUNEC_MAX_CONFIG_BYTES``, ``PRUNEC_MAX_MODEL_MEMBERS``, ``PRUNEC_MAX_MODEL_EXPANSION``. Keras
extracts assets into a temporary directory; loading points it at a private one, removed on every
outcome, so a failure (a full disk included) leaves nothing behind.

Deep models (thousands of layers) need more Python recursion than the default 1,000 frames:
loading, cloning and saving run in ``deep_call``, a worker thread with a large stack and a raised
recursion limit.

Output is written atomically and never over an input (``files.replacing``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import warnings
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Mapping, TypeVar

import keras

from .errors import ModelError, clip
from .files import replacing

__all__ = ["load_model", "save_model", "compile_config", "saved_compile_config", "check_archive", "deep_call", "Limits"]

_TRUST_HINT = "if you trust this file, pass --trust-model-code (trust=True in the Python API)"
_RESAVE_HINT = "is the file complete? save the model again with model.save('NAME.keras')"
_T = TypeVar("_T")


@dataclass(frozen=True)
class Limits:
    """What a ``.keras`` archive may declare before it is loaded (see the module docstring)."""

    total_bytes: int = 32 << 30         # all members, uncompressed
    config_bytes: int = 64 << 20        # config.json: a ConvNeXt's is under 1 MiB
    members: int = 10_000               # Keras writes 3 members plus one per asset
    expansion: int = 100                # uncompressed total / file size (above 64 MiB)

    _ENVIRONMENT = {"total_bytes": "PRUNEC_MAX_MODEL_BYTES", "config_bytes": "PRUNEC_MAX_CONFIG_BYTES",
                    "members": "PRUNEC_MAX_MODEL_MEMBERS", "expansion": "PRUNEC_MAX_MODEL_EXPANSION"}

    @classmethod
    def from_environment(cls) -> "Limits":
        """The defaults, each overridden by its ``PRUNEC_MAX_*`` environment variable."""
        values = {}
        for name, variable in cls._ENVIRONMENT.items():
            text = os.environ.get(variable)
            if text is None:
                continue
            if not text.strip().isdigit():
                raise ModelError(f"{variable} must be a whole number, got {clip(text)!r}",
                                 "environment", f"e.g. {variable}={getattr(cls, name)}")
            values[name] = int(text)
        return cls(**values)


def load_model(path: str | os.PathLike, trust: bool = False,
               limits: Limits | None = None) -> keras.Model:
    """Load a ``.keras``/``.h5`` model; ModelError with one line if it cannot be loaded.

    ``limits`` bound a ``.keras`` archive (default: ``Limits.from_environment()``).
    """
    path = Path(path)
    where = str(path)
    _check_file(path)
    if path.suffix.lower() == ".keras":
        check_archive(path, limits or Limits.from_environment())
    config = _saved_config(path)
    if config is not None and ('"keras_hub' in config or '"prunec>' in config):
        _import_keras_hub(where)             # its classes must be registered before Keras loads
        if '"prunec>' in config:             # prunec's head-sized keras-hub blocks, which a
            import compiler.hub_blocks  # noqa: F401   plain functional model may hold alone
    try:
        with _private_tempdir(), warnings.catch_warnings():
            warnings.simplefilter("ignore")      # Keras' UserWarnings are not the user's concern
            model = deep_call(keras.saving.load_model, path, compile=False, safe_mode=not trust)
    except Exception as error:
        raise _load_error(error, path) from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"file holds a {type(model).__name__}, not a Keras model", where)
    saved = _compile_config_in(config)
    if saved is not None:
        _COMPILE_CONFIGS[model] = saved
    return model


def _import_keras_hub(where: str) -> None:
    try:
        import keras_hub  # noqa: F401  (registers its classes with Keras)
    except ImportError:
        raise ModelError("the model uses keras-hub classes, and keras-hub is not installed",
                         where, "pip install 'prunec[hub]'") from None


# Models load uncompiled (compiling builds an optimizer the compiler never uses); the compile
# configuration a .keras file carries is kept beside the model, for the rebuilt model to take.
_COMPILE_CONFIGS: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()


def saved_compile_config(path: str | os.PathLike) -> dict | None:
    """The compile configuration a ``.keras`` file carries, or None (an ``.h5``, none saved)."""
    return _compile_config_in(_saved_config(Path(path)))


def _saved_config(path: Path) -> str | None:
    """A ``.keras`` file's ``config.json`` text, or None (an ``.h5``, or not readable)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read("config.json").decode("utf-8")
    except Exception:       # .h5, or no config: nothing to read
        return None


def _compile_config_in(text: str | None) -> dict | None:
    try:
        config = json.loads(text) if text is not None else None
    except ValueError:
        return None
    found = config.get("compile_config") if isinstance(config, dict) else None
    return found if isinstance(found, dict) else None


def compile_config(model: keras.Model) -> dict | None:
    """The compile configuration (loss, metrics, optimizer class) of ``model``: its own if it is
    compiled, else the one its file carried, else None."""
    if getattr(model, "compiled", False):
        try:
            return model.get_compile_config()
        except Exception:  # a model compiled with objects that do not serialize
            return None
    return _COMPILE_CONFIGS.get(model)


def _check_file(path: Path) -> None:
    """Raise unless ``path`` is a readable regular file, saying which problem it has."""
    where = str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise ModelError(f"the model file is a broken symbolic link (to "
                             f"'{os.readlink(path)}')", where) from None
        raise ModelError("model file not found", where,
                         "check the path, or the spec's 'model:' key") from None
    except OSError as error:                 # ELOOP: a symbolic link loop; EACCES on a directory
        raise ModelError(f"cannot read the model file: {error.strerror or error}", where) from None
    if not stat.S_ISREG(info.st_mode) or not os.access(path, os.R_OK):
        raise ModelError("model file is not a readable file", where)


def check_archive(path: str | os.PathLike, limits: Limits) -> None:
    """Raise ``ModelError`` unless ``path`` is a zip whose declared members are within ``limits``."""
    where, size = os.fsdecode(path), os.path.getsize(path)
    hint = "raise it with {} if you trust this file".format
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError):
        what = "the file is empty" if size == 0 else "not a zip file (truncated, or another kind " \
            "of file)"
        raise ModelError(f"not a valid .keras archive: {what}", where, _RESAVE_HINT) from None
    except OSError as error:
        raise ModelError(f"cannot read the model file: {error.strerror or error}", where) from None
    if len(members) > limits.members:
        raise ModelError(f"the archive holds {len(members)} members, more than the "
                         f"{limits.members} a model may", where, hint("PRUNEC_MAX_MODEL_MEMBERS"))
    for member in members:
        _check_member_name(member.filename, where)
        if member.filename == "config.json" and member.file_size > limits.config_bytes:
            raise ModelError(f"its config.json declares {member.file_size} bytes, more than the "
                             f"{limits.config_bytes} a model config may", where,
                             hint("PRUNEC_MAX_CONFIG_BYTES"))
    total = sum(member.file_size for member in members)
    if total > limits.total_bytes:
        raise ModelError(f"the archive declares {total} bytes uncompressed, more than the "
                         f"{limits.total_bytes} a model may", where, hint("PRUNEC_MAX_MODEL_BYTES"))
    if total > max(64 << 20, limits.expansion * size):
        raise ModelError(f"the archive declares {total} bytes uncompressed, {total // max(size, 1)} "
                         f"times its size (a model stores its weights uncompressed)", where,
                         hint("PRUNEC_MAX_MODEL_EXPANSION"))


def _check_member_name(name: str, where: str) -> None:
    """Refuse a member that would be extracted outside its directory (``../x``, ``/x``, ``C:x``)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise ModelError(f"the archive holds a member named {clip(name)!r}, which points outside "
                         "the archive", where, "a file Keras wrote has no such member; do not "
                         "load this file")


@contextlib.contextmanager
def _private_tempdir() -> Iterator[str]:
    """Point ``tempfile`` (where Keras extracts assets) at a fresh directory, removed after."""
    directory = tempfile.mkdtemp(prefix="prunec-")
    before = tempfile.tempdir
    tempfile.tempdir = directory
    try:
        yield directory
    finally:
        tempfile.tempdir = before
        shutil.rmtree(directory, ignore_errors=True)


def deep_call(function: Callable[..., _T], *args, **kwargs) -> _T:
    """``function(*args, **kwargs)`` with room for deep recursion (Keras recurses once per layer
    when it deserializes, clones or saves a model): in a thread with a 512 MiB stack and a
    recursion limit of 100,000, then the result or the exception, as if called here."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:       # handed to the caller's thread
            outcome["error"] = error

    limit, size = sys.getrecursionlimit(), threading.stack_size()
    try:
        threading.stack_size(_DEEP_STACK)
        sys.setrecursionlimit(max(limit, _DEEP_RECURSION))
        worker = threading.Thread(target=run, name="prunec-deep")
        worker.start()
    finally:
        threading.stack_size(size)
    interrupted = False
    try:
        while worker.is_alive():             # Ctrl-C: let the step finish (it may be writing a
            try:                             # temporary file), then stop
                worker.join()
            except KeyboardInterrupt:
                interrupted = True
    finally:
        sys.setrecursionlimit(limit)
    if interrupted:
        raise KeyboardInterrupt
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


_DEEP_STACK = 512 << 20
_DEEP_RECURSION = 100_000


def _load_error(error: Exception, path: Path) -> ModelError:
    """Keras' many ways to fail to load, as one line naming the file."""
    where = str(path)
    text = " ".join(str(error).split())
    if isinstance(error, RecursionError):
        return ModelError("the model nests too deeply to load", where)
    if "safe_mode=False" in text or "arbitrary code execution" in text:
        return ModelError("the model contains serialized Python code (e.g. a Lambda layer), "
                          "which is not loaded by default because it could run anything", where,
                          _TRUST_HINT)
    unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
    if unknown:
        return ModelError(f"the model uses '{unknown.group(1)}', which is not a Keras class and "
                          "was not registered in this process", where,
                          "import the module that defines it (decorated with "
                          "@keras.saving.register_keras_serializable) before loading; see "
                          "docs/custom-layers.md")
    if path.suffix.lower() in (".yaml", ".yml", ".lock", ".json"):
        return ModelError("this is not a model file", where, "give a .keras or .h5 model here "
                          "(commands take SPEC first: 'prunec plan SPEC MODEL', but "
                          "'prunec graph MODEL [SPEC]')")
    if isinstance(error, OSError) and error.errno is not None:
        return ModelError(f"cannot load model: {error.strerror}", where)
    return ModelError(f"cannot load model: {clip(text, 300)}", where)


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
            with _private_tempdir(), warnings.catch_warnings():   # Keras stages assets there
                warnings.simplefilter("ignore")
                deep_call(model.save, temporary)
        except Exception as error:  # Keras raises many types (OSError among them): one line
            text = clip(" ".join(str(error).split()), 300)
            raise ModelError(f"cannot write model: {text}", str(out)) from None
