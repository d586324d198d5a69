"""One error hierarchy for every stage: a message, where it happened, and how to fix it.

Only the CLI prints errors; every stage raises one of these instead of asserting, so a user always
gets a single line such as::

    specs/mnist.yaml:5:13: rule 1 (layer 'fc1'): index 600 is out of range for 'fc1' (Dense, 512 channels) (hint: valid range 0..511)
"""

from __future__ import annotations

import re
import sys

__all__ = ["CompilerError", "SpecError", "ModelError", "ConstraintError", "InternalError",
           "VerificationError", "RebuildError", "ArtifactError", "print_error", "internal_error_text", "clip", "strip_ansi"]


class CompilerError(Exception):
    """Base of every error prunec reports to a user.

    ``where`` is a location (``specs/x.yaml:14:7`` or ``layer 'add_2' (Add)``); ``hint`` says how to
    fix it (closest name, valid range). Both are optional, the message is not.
    """

    def __init__(self, message: str, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" (hint: {self.hint})"
        return " ".join(strip_ansi(text).splitlines())   # one line, whatever a name carried


class SpecError(CompilerError):
    """The spec file itself is wrong: YAML, schema or semantic checks that need no model.

    A file can hold several mistakes; they are all reported at once: ``others`` holds the ones
    after the first, in file order, and the CLI prints one line each.
    """

    def __init__(self, message: str, where: str | None = None, hint: str | None = None,
                 others: tuple["SpecError", ...] = ()):
        super().__init__(message, where, hint)
        self.others = tuple(others)

    def all(self) -> tuple["SpecError", ...]:
        return (self, *self.others)


class ModelError(CompilerError):
    """The model cannot be loaded, or is of a form prunec cannot reason about."""


class ConstraintError(CompilerError):
    """The spec is well formed but cannot be satisfied on this model (range, coupling, outputs)."""


class InternalError(CompilerError):
    """prunec built something wrong (its bug, or a ``register_rule`` that does not match its
    layer): exit code 3, not 1, because the user's input was fine."""


class VerificationError(InternalError):
    """The rebuilt model does not satisfy the correctness law; nothing is written."""


class RebuildError(InternalError):
    """Keras refused to rebuild a layer as the plan says (a rule declared the wrong change)."""


class ArtifactError(CompilerError):
    """A plan or lock file cannot be read, or a lock no longer matches its spec or model."""


def print_error(error: CompilerError, stream=None) -> None:
    """Print ``error`` as the CLI does: ``error: <where>: <message> (hint: ...)``, one line per
    mistake (a ``SpecError`` may carry several)."""
    for each in error.all() if isinstance(error, SpecError) else (error,):
        print(f"error: {each}", file=stream or sys.stderr)


def internal_error_text(error: BaseException) -> str:
    """An unexpected exception as one line: what it was, and that it is prunec's bug."""
    return (f"internal error: {type(error).__name__}: "
            f"{clip(' '.join(strip_ansi(str(error)).split()), 300)} "
            "(hint: this is a prunec bug; please report it with the spec and model)")


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (Keras colours some of its error messages)."""
    return _ANSI.sub("", text) if "\x1b" in text else text


def clip(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters, ending in ``...`` when cut: messages stay one line."""
    return text if len(text) <= limit else text[:limit - 3] + "..."
