"""Writing output files: all of the new file or none of it, and never over an input.

Every file prunec writes (models, plans, locks, graph drawings) goes to a temporary file in the
target's directory, named ``.<name>.prunec-<pid>-<random><suffix>`` so that it is hidden and
recognisable; it is flushed to disk, given the mode the target would get, and renamed over the
target only when complete (``os.replace`` is atomic on POSIX). A process killed at any moment
therefore leaves the old file or the complete new one, never half of either. A SIGKILL cannot
clean up after itself, so a killed run may leave its temporary file behind: the next run writing
the same target removes such leftovers whose process is gone (a live writer's file is never
touched).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

from .errors import CompilerError

__all__ = ["replacing", "write_text", "temporary_files", "same_file"]


@contextlib.contextmanager
def replacing(out: str | os.PathLike, error: type[CompilerError] = CompilerError,
              protect: Mapping[str, str | os.PathLike | None] | None = None) -> Iterator[str]:
    """A temporary path beside ``out``, renamed over it when the block succeeds, else deleted.

    ``protect`` names the command's inputs (``{"the input model": path, "the spec": path}``): ``out``
    may not be one of them, whatever the spelling (``./m.keras``, an absolute path, a symlink or a
    hard link). An
    ``OSError`` becomes ``error`` naming ``out``; a ``CompilerError`` raised by the block passes.
    """
    out = Path(out)
    for what, other in (protect or {}).items():
        if other is not None and same_file(out, Path(other)):
            raise error(f"refusing to overwrite {what}", str(out),
                        "choose another output path with -o")
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise error("output directory does not exist", str(out))
    if out.is_dir():
        raise error("output path is a directory", str(out), "give a file name")
    for stale in temporary_files(out, alive=False):
        stale.unlink(missing_ok=True)
    temporary = None
    try:
        mode = stat.S_IMODE(out.stat().st_mode) if out.is_file() else 0o666 & ~_umask()
        handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.prunec-{os.getpid()}-",
                                             suffix=out.suffix, dir=directory)
        os.close(handle)
        yield temporary
        os.chmod(temporary, mode)
        _fsync(temporary)
        os.replace(temporary, out)
        _fsync(directory)
    except BaseException as failure:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(failure, OSError):
            raise error(f"cannot write: {failure.strerror or failure}", str(out)) from None
        raise


def write_text(path: str | os.PathLike, text: str, protect: Mapping | None = None,
               error: type[CompilerError] = CompilerError) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` through ``replacing``."""
    with replacing(path, error, protect) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)


def temporary_files(out: str | os.PathLike, alive: bool | None = None) -> list[Path]:
    """prunec's temporary files for ``out`` in its directory; ``alive`` filters by their writer."""
    out = Path(out)
    directory = out.parent if str(out.parent) else Path(".")
    pattern = re.compile(re.escape(f".{out.name}.prunec-") + r"(\d+)-[^/]*" + re.escape(out.suffix)
                         + r"\Z")
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        match = pattern.match(name)
        if match and (alive is None or _alive(int(match.group(1))) == alive):
            found.append(directory / name)
    return sorted(found)


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (same inode, or the same path once resolved)."""
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
