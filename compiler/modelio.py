"""Loading and writing model files: safe by default, atomic, never over the input.

Models load with Keras' ``safe_mode`` on, so a ``.keras`` file carrying serialized Python code (a
``Lambda``) is refused unless the user says they trust it.

Output goes to a temporary file in the target's directory, named ``.<name>.prunec-<pid>-<random>``
so that it is hidden and recognisable; it is flushed to disk, given the mode the target would get,
and renamed over the target only when complete (``os.replace`` is atomic on POSIX). A process
killed at any moment therefore leaves the old file or the complete new one, never half of either.
A SIGKILL cannot clean up after itself, so a killed run may leave its temporary file behind: the
next run writing the same target removes such leftovers whose process is gone (a live writer's
file is never touched).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path

import keras

from .errors import ModelError

__all__ = ["load_model", "save_model", "temporary_files"]

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
        raise ModelError(f"cannot load model: {text[:300]}", where) from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"file holds a {type(model).__name__}, not a Keras model", where)
    return model


def save_model(model: keras.Model, out: str | os.PathLike, protect: tuple = ()) -> None:
    """Write ``model`` to ``out`` atomically; refuse to overwrite any path in ``protect``.

    ``protect`` holds the input model's path: ``out`` may not be the same file, whatever the
    spelling (``./m.keras``, an absolute path, a symlink or a hard link to it).
    """
    out = Path(out)
    if out.suffix != ".keras":
        raise ModelError("output file must end in .keras", str(out))
    for other in protect:
        if other is not None and _same_file(out, Path(other)):
            raise ModelError("refusing to overwrite the input model", str(out),
                             "choose another output path with -o")
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise ModelError("output directory does not exist", str(out))
    if out.is_dir():
        raise ModelError("output path is a directory", str(out), "give a file name ending in .keras")
    for stale in temporary_files(out, alive=False):
        stale.unlink(missing_ok=True)
    mode = stat.S_IMODE(out.stat().st_mode) if out.is_file() else 0o666 & ~_umask()
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.prunec-{os.getpid()}-",
                                             suffix=".keras", dir=directory)
    except OSError as error:
        raise ModelError(f"cannot write model: {error.strerror or error}", str(out)) from None
    os.close(handle)
    try:
        model.save(temporary)
        os.chmod(temporary, mode)
        _fsync(temporary)
        os.replace(temporary, out)
        _fsync(directory)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, Exception):
            text = " ".join(str(error).split())[:300]
            raise ModelError(f"cannot write model: {text}", str(out)) from None
        raise


def temporary_files(out: str | os.PathLike, alive: bool | None = None) -> list[Path]:
    """prunec's temporary files for ``out`` in its directory; ``alive`` filters by their writer."""
    out = Path(out)
    directory = out.parent if str(out.parent) else Path(".")
    pattern = re.compile(re.escape(f".{out.name}.prunec-") + r"(\d+)-[^/]*\.keras\Z")
    found = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        match = pattern.match(name)
        if match and (alive is None or _alive(int(match.group(1))) == alive):
            found.append(directory / name)
    return sorted(found)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists() and a.samefile(b):
            return True
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True                       # someone else's process, or cannot tell: leave it
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path) -> None:
    """Flush a file (or a directory entry) to disk: a crash after the rename keeps the data."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass                              # some file systems cannot fsync a directory
    finally:
        os.close(fd)
