"""Plans and locks as files: one JSON layout that diffs well, written atomically, read back checked.

Both artifacts are JSON with a fixed key order (documented by the JSON Schemas shipped in
``compiler/schemas/``) and a fixed line layout: one layer, one group member, one note a line, so
that ``git diff`` of two of them shows the change of the shrink itself and nothing else::

    {
      "format": "prunec-lock",
      ...
      "groups": [
        {
          "group": 1,
          "rules": [1],
          "coupled_by": ["add"],
          "approximate": false,
          "members": [
            {"layer": "conv_a", "removed": [1, 2]},
            {"layer": "conv_b", "removed": [1, 2]}

Reading one back checks it against its schema, so a hand-edited file fails with the place of the
mistake instead of somewhere deep inside ``prunec diff`` or ``apply --locked``. Writing them is
``files.write_text``'s job.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import jsonschema

from .errors import ArtifactError, clip

__all__ = ["render_json", "read_artifact", "artifact_schema", "artifact_schema_text",
           "decisions_digest", "SCHEMAS", "PLAN_FORMAT", "LOCK_FORMAT", "ARTIFACT_VERSION",
           "DIGEST_KEY"]

PLAN_FORMAT, LOCK_FORMAT, ARTIFACT_VERSION = "prunec-plan", "prunec-lock", 1
MAX_ARTIFACT_BYTES = 256 << 20      # a bound, so that a stray huge file fails at once
SCHEMAS = ("spec", "plan", "lock")
_SCHEMA_DIR = Path(__file__).with_name("schemas")
_KINDS = {PLAN_FORMAT: "plan", LOCK_FORMAT: "lock"}
DIGEST_KEY = "decisions_sha256"     # a lock's digest of its own totals and groups


def decisions_digest(data: dict) -> str:
    """SHA-256 of the canonical JSON of a lock's ``totals`` and ``groups`` (sorted keys, no
    spaces): a hand edit of a channel that keeps every count still changes it."""
    decisions = {"totals": data["totals"], "groups": data["groups"]}
    text = json.dumps(decisions, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _compact(value: Any) -> bool:
    """Scalars, lists of scalars, and mappings of those fit on one line."""
    if isinstance(value, list):
        return all(_scalar(item) for item in value)
    if isinstance(value, dict):
        return all(_scalar(item) or (isinstance(item, list) and _compact(item))
                   for item in value.values())
    return _scalar(value)


def _inline(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=True, allow_nan=False)


def render_json(value: Any, rows: Iterable[str] = (), lines: Iterable[str] = ()) -> str:
    """JSON text, one nesting level a line, keys in the order given (callers fix the order).

    A list under a key in ``rows`` puts each item on one line however nested it is (a plan's
    layers, a group's members); a value under a key in ``lines`` is opened one entry a line even
    when it would fit on one (notes). Everything else small enough stays on one line.

    >>> print(render_json({"a": [{"b": 1}], "c": [1, 2]}, rows=["a"]), end="")
    {
      "a": [
        {"b": 1}
      ],
      "c": [1, 2]
    }
    """
    rows, lines = frozenset(rows), frozenset(lines)

    def render(item: Any, depth: int, key: str | None) -> str:
        pad, inner = "  " * depth, "  " * (depth + 1)
        opened = key in lines or key in rows or not _compact(item)
        if isinstance(item, dict) and item and opened:
            parts = [f"{inner}{_inline(k)}: {render(v, depth + 1, k)}" for k, v in item.items()]
            return "{\n" + ",\n".join(parts) + "\n" + pad + "}"
        if isinstance(item, list) and item and opened:
            parts = [inner + (_inline(v) if key in rows else render(v, depth + 1, None))
                     for v in item]
            return "[\n" + ",\n".join(parts) + "\n" + pad + "]"
        return _inline(item)

    return render(value, 0, None) + "\n"


@functools.cache
def _schema(name: str) -> dict:
    return json.loads((_SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


def artifact_schema(name: str) -> dict:
    """The JSON Schema of ``spec``, ``plan`` or ``lock`` files (a fresh copy)."""
    if name not in SCHEMAS:
        raise ValueError(f"unknown schema {name!r}; choose from {', '.join(SCHEMAS)}")
    return json.loads(json.dumps(_schema(name)))


def artifact_schema_text(name: str) -> str:
    """A schema as indented JSON, for ``prunec schema`` and editors."""
    artifact_schema(name)
    return json.dumps(_schema(name), indent=2) + "\n"


def read_artifact(path: str | os.PathLike, expect: str | None = None) -> tuple[str, dict]:
    """Read a plan or lock file: ``("plan" | "lock", data)``, checked against its schema.

    ``expect`` (``"plan"`` or ``"lock"``) refuses the other kind.
    """
    where = os.fsdecode(path)
    wanted = {"plan": "'prunec plan --format json'", "lock": "'prunec lock'"}
    made_by = wanted[expect] if expect else " or ".join(wanted.values())
    try:
        if Path(where).stat().st_size > MAX_ARTIFACT_BYTES:
            raise ArtifactError(f"file is larger than {MAX_ARTIFACT_BYTES >> 20} MiB", where,
                                f"is it a prunec plan or lock? they are written by {made_by}")
        text = Path(where).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError("file not found", where) from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ArtifactError(f"cannot read: {reason}", where,
                            f"such files are UTF-8 JSON written by {made_by}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ArtifactError(f"not valid JSON: {error.msg}", f"{where}:{error.lineno}:{error.colno}",
                            f"such files are written by {made_by}") from None
    except (RecursionError, ValueError):      # nesting too deep, numbers too long to convert
        raise ArtifactError("not a prunec plan or lock: JSON nested too deeply or numbers too "
                            "long", where, f"such files are written by {made_by}") from None
    kind = _KINDS.get(data.get("format")) if isinstance(data, dict) else None
    if kind is None or (expect is not None and kind != expect):
        what = f"a prunec {expect}" if expect else "a prunec plan or lock"
        raise ArtifactError(f"not {what} file", where, f"such files are written by {made_by}")
    if data.get("version") != ARTIFACT_VERSION:
        raise ArtifactError(f"unsupported {kind} version {clip(json.dumps(data.get('version')))}",
                            where, f"this prunec reads version {ARTIFACT_VERSION}; "
                            f"write the {kind} again with this prunec")
    if kind == "lock" and DIGEST_KEY not in data and {"totals", "groups"} <= set(data):
        raise ArtifactError(f"the lock has no '{DIGEST_KEY}': it was written by an older prunec, "
                            "so its channels cannot be checked", where,
                            "run 'prunec lock SPEC' again and review the change with 'prunec diff'")
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(_schema(kind)).iter_errors(data))
    if error is not None:
        at = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise ArtifactError(f"not a valid {kind} file: at '{at.lstrip('.') or '(top)'}': "
                            f"{clip(' '.join(error.message.split()), 200)}", where,
                            f"was it edited by hand? write it again with {wanted[kind]}")
    if kind == "lock" and data[DIGEST_KEY] != decisions_digest(data):
        raise ArtifactError(f"the lock's channels or totals do not match its '{DIGEST_KEY}': it "
                            "was edited by hand", where, "run 'prunec lock SPEC' again to write "
                            "what the spec resolves to, and review it with 'prunec diff'")
    return kind, data
