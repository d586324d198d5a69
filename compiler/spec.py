"""The spec stage: a YAML file in, an immutable ``Spec`` out, or every mistake with its line.

Needs no model. bytes -> plain values with a ``path -> mark`` table (``yamlread.py``: safe, bounded,
every value located) -> jsonschema for the structure, Python for what a schema words badly (exactly
one of, duplicates, criterion placement, long lists in one pass). A jsonschema error's
``absolute_path`` finds its mark, so every message points at a line. At most ``MAX_RULES`` rules;
a long list reports its first ``MAX_LIST_ERRORS`` problems and then how many more there are.

>>> spec = parse_spec("version: 1\\nprune:\\n  - layer: fc1\\n    remove: [1, 10]\\n", "s.yaml")
>>> spec.rules[0].remove, spec.rules[0].location("remove", 1)
((1, 10), 's.yaml:4:17')
"""

from __future__ import annotations

import copy
import difflib
import functools
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field as dc_field
from typing import Any, Iterator, Mapping

import jsonschema

from .artifacts import artifact_schema
from .errors import SpecError, clip as _clip
from .layout import OUTPUTS
from .yamlread import EMPTY, MAX_BYTES, MAX_DEPTH, MAX_ERRORS, MAX_VALUES, Report, read

__all__ = ["SpecRule", "Spec", "load_spec", "parse_spec",
           "SUPPORTED_VERSIONS", "MAX_BYTES", "MAX_VALUES", "MAX_RULES", "MAX_DEPTH",
           "MAX_LIST_ERRORS", "MAX_ERRORS"]

SUPPORTED_VERSIONS = (1,)
MAX_RULES = 1_000
MAX_LIST_ERRORS = 10       # per index list; the rest are counted in one more line

_SELECTORS = ("remove", "keep", "fraction", "count")
_MODEL_MAGIC = (b"PK\x03\x04", b"\x89HDF\r\n")      # .keras (a zip) and .h5 files
_EXPECTED = {"integer": "an integer", "number": "a number", "string": "a string",
             "array": "a list", "object": "a mapping", "boolean": "true or false"}
_REQUIRED_HINTS = {"version": "add 'version: 1'", "prune": "add a 'prune:' list of rules"}
_WORDED_IN_PYTHON = frozenset({"anyOf", "oneOf", "allOf", "dependentSchemas", "not"})


@dataclass(frozen=True)
class SpecRule:
    """One entry of ``prune:``, defaults applied; ``locations`` lets later stages cite its line.

    (A *spec rule* says what to remove; a *layer rule*, ``compiler.rules.Rule``, says how one
    Keras layer family moves channels.)
    """

    number: int
    where: str
    layer: str | None
    type: str | None
    exclude: tuple[str, ...]
    remove: tuple[int, ...] | None
    keep: tuple[int, ...] | None
    fraction: float | None
    count: int | None
    criterion: str
    round_to: int | None
    min_keep: int | None
    optional: bool
    exact: bool
    unit: str = OUTPUTS
    locations: Mapping[str, str] = dc_field(default_factory=dict, compare=False, repr=False)

    def location(self, field: str, item: int | None = None) -> str:
        """Where ``field`` (or its ``item``-th list entry) is written; falls back to the rule."""
        if item is not None and f"{field}[{item}]" in self.locations:
            return self.locations[f"{field}[{item}]"]
        return self.locations.get(field, self.where)

    def label(self) -> str:
        """``rule 2 (layer 'fc1')``: how every message names this rule."""
        label = _label(self.number, self.layer, self.type)
        return label if self.unit == OUTPUTS else f"{label[:-1]}, unit {self.unit})"

    def kept(self, size: int) -> int:
        """How many of a coupled set's ``size`` channels a ``fraction``/``count`` rule keeps:
        ``floor(fraction * size)`` (or ``count``) go, then ``rounded``."""
        gone = self.count if self.count is not None else math.floor(self.fraction * size)
        return self.rounded(size, size - gone)

    def why_nothing(self, size: int, what: str = "channels") -> str:
        """Why ``kept(size)`` is ``size``: what the plan says of a set the rule leaves alone
        (``what`` its ``size`` things are: channels, or groups of channels coupled together)."""
        if self.fraction is not None and math.floor(self.fraction * size) == 0:
            return f"fraction {self.fraction:g} of its {size} {what} rounds down to none"
        bounds = [f"{k} {v}" for k, v in (("min_keep", self.min_keep), ("round_to", self.round_to))
                  if v is not None]
        verb = "keep" if len(bounds) > 1 else "keeps"
        return f"{' and '.join(bounds)} {verb} all of its {size} {what}"

    def rounded(self, size: int, keep: int) -> int:
        """A kept count of ``size`` channels raised to ``min_keep`` and to a multiple of
        ``round_to`` (at most ``size``): the count this rule keeps when it asks for ``keep``."""
        if self.min_keep is not None:
            keep = max(keep, min(self.min_keep, size))
        if self.round_to is not None:
            keep = min(size, math.ceil(keep / self.round_to) * self.round_to)
        return keep


@dataclass(frozen=True)
class Spec:
    """A checked spec. ``model`` is already resolved relative to the spec file."""

    path: str
    version: int
    model: str | None
    rules: tuple[SpecRule, ...]
    data: str | None = None           # representative data (.npz/.npy), resolved like ``model``
    loss: str | None = None           # a Keras loss identifier (criterion taylor, evaluate)
    target: Mapping[str, Any] | None = None     # {"flops": 0.5} or {"params": 0.5} (budget.py)
    finetune: Mapping[str, Any] | None = None   # loss, optimizer, learning_rate, batch_size
    locations: Mapping[str, str] = dc_field(default_factory=dict, compare=False, repr=False)


def load_spec(path: str | os.PathLike) -> Spec:
    """Read and check a spec file; any problem is a ``SpecError`` (all of them, in file order)."""
    name = os.fsdecode(path)
    try:
        with open(name, "rb") as stream:
            data = stream.read(MAX_BYTES + 1)     # the reader refuses more; never read a huge file
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read spec: {getattr(exc, 'strerror', None) or exc}",
                        where=name) from None
    if data.startswith(_MODEL_MAGIC):
        raise SpecError("this is a model file, not a spec", where=name,
                        hint="commands take SPEC first ('prunec plan SPEC MODEL'), but "
                             "'prunec graph MODEL [SPEC]' takes the model first")
    return parse_spec(data, name)


def parse_spec(text: str | bytes, path: str) -> Spec:
    """Check spec text; ``path`` names it in messages and anchors a relative ``model:``."""
    path = os.fsdecode(path)
    try:
        return _parse(text, path)
    except SpecError:
        raise
    except Exception as exc:  # the promise is a SpecError for any input, never a traceback
        raise SpecError(f"cannot process spec: {type(exc).__name__}: {exc}", where=path) from exc


@functools.cache
def _schema() -> dict:
    """The published spec schema (``prunec schema``), read once."""
    return artifact_schema("spec")


@functools.cache
def _validator() -> Any:
    """The published schema minus per-item checks of lists (``_check_indices`` and
    ``_check_names`` do them in one fast pass, with the first line of a duplicate), and with ``1.0`` and ``true`` not counting as integers."""
    schema = copy.deepcopy(_schema())
    del schema["$defs"]["indices"]["items"], schema["$defs"]["indices"]["uniqueItems"]
    del schema["$defs"]["rule"]["properties"]["exclude"]["items"]     # _check_names does them
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine("integer", lambda _, v: type(v) is int)
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


def _parse(text: str | bytes, path: str) -> Spec:
    report = _Report(path)
    data = report.data = read(text, report)
    if data is EMPTY:
        raise SpecError("the spec is empty", where=f"{path}:1:1",
                        hint="start with 'version: 1' and a 'prune:' list")
    if not isinstance(data, dict):
        report.raise_if_any()  # a refused tag on the whole document says more than "got null"
        raise SpecError("the spec must be a mapping with 'version' and 'prune', got "
                        + _describe(data), where=report.where(()))
    version = data.get("version")
    if type(version) is int and version not in SUPPORTED_VERSIONS:  # the rest may be another format
        raise SpecError(f"unsupported spec version {version}", where=report.where(("version",)),
                        hint="supported versions: " + ", ".join(map(str, SUPPORTED_VERSIONS)))
    rules = data.get("prune")
    if isinstance(rules, list) and len(rules) > MAX_RULES:
        raise SpecError(f"the spec has {len(rules)} rules, more than the {MAX_RULES} a spec may "
                        "have", where=report.where(("prune",)),
                        hint="choose layers with globs ('block*_conv1') or 'type:' instead")
    _check_schema(data, report)
    for number, rule in enumerate(rules if isinstance(rules, list) else ()):
        if isinstance(rule, dict):
            _check_rule(("prune", number), rule, report, "target" in data)
    _check_target(data, report)
    report.raise_if_any()
    return _build(data, path, report)


class _Report(Report):
    """Messages inside a rule start with its label, known only once every value is read."""

    def _prefix(self, path: tuple) -> str:
        if len(path) < 2 or path[0] != "prune" or not isinstance(path[1], int):
            return ""
        rule = self.data["prune"][path[1]]
        rule = rule if isinstance(rule, dict) else {}
        return _label(path[1] + 1, rule.get("layer"), rule.get("type")) + ": "


def _check_schema(data: dict, report: _Report) -> None:
    by_path: dict[tuple, list] = {}
    for error in itertools.islice(_validator().iter_errors(data), 4 * MAX_ERRORS):
        path = tuple(error.absolute_path)
        if error.validator not in _WORDED_IN_PYTHON and not report.is_bad(path):
            by_path.setdefault(path, []).append(error)
    for path, errors in by_path.items():
        for first in ("type", "minLength"):  # "must be a string" says it all
            if any(e.validator == first for e in errors):
                errors = [e for e in errors if e.validator == first]
                break
        for error in errors:
            _schema_error(error, path, report)


def _schema_error(error: jsonschema.ValidationError, path: tuple, report: _Report) -> None:
    kind, value, expected, mark = error.validator, error.instance, error.validator_value, None
    name, hint = _field_name(path), None
    if kind == "additionalProperties":
        valid = list(error.schema["properties"])
        unknown = [k for k in value if k not in valid]
        for key in unknown[:MAX_LIST_ERRORS]:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "valid keys: " + ", ".join(valid)
            report.add(path + (key,), f"unknown key {key!r}", report.keys[path + (key,)], hint)
        if len(unknown) > MAX_LIST_ERRORS:
            key = unknown[MAX_LIST_ERRORS]
            report.add(path + (key,), f"{len(unknown) - MAX_LIST_ERRORS} more unknown keys from "
                       "here on", report.keys[path + (key,)], "valid keys: " + ", ".join(valid))
        return
    if kind == "required":
        for key in (k for k in expected if k not in value):
            report.add(path, f"missing required key {key!r}", report.marks[path],
                       _REQUIRED_HINTS.get(key))
        return
    if kind == "type" and len(path) == 2 and path[0] == "prune":  # a rule that is not a mapping
        text = f"must be a mapping such as {{layer: fc1, remove: [0]}}, got {_describe(value)}"
    elif kind == "type":
        plural = " of rules" if path == ("prune",) else ""
        text = f"{name} must be {_EXPECTED[expected]}{plural}, got {_describe(value)}"
        if expected == "string" and not isinstance(value, (list, dict)):
            hint = "put the value in quotes"
        elif expected == "array" and not isinstance(value, (list, dict, type(None))) and not plural:
            hint = f"write a list, e.g. [{_clip(_as_items(value))}]"
    elif kind == "enum":
        text = f"unknown {name.strip(chr(39))} {_clip(repr(value))}"
        hint = "valid values: " + ", ".join(map(str, expected))
    elif kind in ("minItems", "minLength"):
        text = f"{name} must not be empty"
        text = "'prune' must list at least one rule" if path == ("prune",) else text
    elif kind == "minimum":
        text = f"{name} must be at least {expected}, got {_clip(str(value))}"
    elif kind in ("exclusiveMinimum", "exclusiveMaximum"):
        text = f"{name} must be between 0 and 1 (exclusive), got {value!r}"
    elif kind == "pattern":
        text = f"{name} has an empty part between '/' in {_clip(repr(value))}"
        hint = "nested layers are written 'outer/inner', e.g. 'backbone/conv2'"
    else:  # a keyword not worded here yet: still one line, still located
        text = f"{name}: {_clip(' '.join(error.message.split()), 200)}"
    report.add(path, text, report.marks[path], hint)


def _check_rule(path: tuple, rule: dict, report: _Report, targeted: bool = False) -> None:
    """What the schema could only say as "not valid under any of the given schemas"."""
    valid = list(_schema()["$defs"]["rule"]["properties"])
    unknown = itertools.islice((k for k in rule if k not in valid), MAX_LIST_ERRORS)
    meant = {m for k in unknown for m in difflib.get_close_matches(k, valid, n=1)}
    given = [k for k in rule if k in _SELECTORS]
    one_of = f"give exactly one of {', '.join(_SELECTORS)}"
    if not {"layer", "type"} & (set(rule) | meant):  # a typo'd 'layr' is reported once, as unknown
        report.add(path, "give 'layer' or 'type' to choose the layers to prune", report.marks[path])
    if len(given) > 1:
        report.add(path, f"{one_of} (found: {', '.join(given)})", report.keys[path + (given[1],)])
    elif not given and not meant & set(_SELECTORS) and not targeted:
        report.add(path, f"{one_of} (found: none)", report.marks[path],
                   "or set a 'target:' for the whole spec and leave the amount to it")
    elif given and given[0] in ("remove", "keep") and "criterion" in rule:
        report.add(path, f"'criterion' applies only to 'fraction' and 'count', not to {given[0]!r}",
                   report.keys[path + ("criterion",)], "remove 'criterion'")
    for field in ("remove", "keep"):
        if isinstance(rule.get(field), list):
            _check_indices(path + (field,), rule[field], report)
    if isinstance(rule.get("exclude"), list):
        _check_names(path + ("exclude",), rule["exclude"], report)
    fraction = rule.get("fraction")
    if isinstance(fraction, float) and math.isnan(fraction):  # nan slips past < and >
        report.add(path, "'fraction' must be between 0 and 1 (exclusive), got nan",
                   report.marks[path + ("fraction",)])


def _check_target(data: dict, report: _Report) -> None:
    """``target:`` names one measure, and some rule leaves its amount to it."""
    target = data.get("target")
    if not isinstance(target, dict):
        return
    given = [key for key in ("flops", "params") if key in target]
    if len(given) != 1:
        report.add(("target",), f"give exactly one of flops, params (found: {', '.join(given) or 'none'})",
                   report.marks[("target",)], "e.g. target: {flops: 0.5}")
    rules = data.get("prune") if isinstance(data.get("prune"), list) else []
    if rules and all(isinstance(r, dict) and set(r) & set(_SELECTORS) for r in rules):
        report.add(("target",), "every rule gives its own amount, so the target ranks nothing",
                   report.marks[("target",)], "leave out remove/keep/fraction/count in the rules "
                   "the target should size")


def _check_indices(path: tuple, items: list, report: _Report) -> None:
    """One pass over a possibly 100k-long list: types, signs, duplicates with the first line."""
    field, first, marks, problems = path[-1], {}, report.marks, _ListProblems(path, report)
    for j, x in enumerate(items):
        if type(x) is not int:  # bool is an int subclass but not an index
            if not report.is_bad(path + (j,)):
                problems.add(j, lambda: (f"'{field}[{j}]' must be an integer, got {_describe(x)}", None))
        elif x < 0:
            problems.add(j, lambda: (f"negative index {_clip(str(x))} in '{field}'",
                                     "channel indices start at 0"))
        elif x in first:
            m = marks[path + (first[x],)]
            problems.add(j, lambda: (f"duplicate index {_clip(str(x))} in '{field}'",
                                     f"first given at line {m.line + 1}, column {m.column + 1}"))
        else:
            first[x] = j
    problems.close()


def _check_names(path: tuple, items: list, report: _Report) -> None:
    """``exclude``'s items: non-empty strings (checked here, not by jsonschema: lists can be long)."""
    problems = _ListProblems(path, report)
    for j, x in enumerate(items):
        if report.is_bad(path + (j,)):
            continue
        if not isinstance(x, str):
            hint = None if isinstance(x, (list, dict)) else "put the value in quotes"
            problems.add(j, lambda: (f"'exclude[{j}]' must be a string, got {_describe(x)}", hint))
        elif not x:
            problems.add(j, lambda: (f"'exclude[{j}]' must not be empty", None))
    problems.close()


class _ListProblems:
    """Reports a list's first ``MAX_LIST_ERRORS`` problems, then one line counting the rest."""

    def __init__(self, path: tuple, report: _Report):
        self.path, self.report, self.count, self.first_hidden = path, report, 0, None

    def add(self, item: int, describe) -> None:
        self.count += 1
        if self.count <= MAX_LIST_ERRORS:
            text, hint = describe()
            self.report.add(self.path, text, self.report.marks[self.path + (item,)], hint)
        elif self.first_hidden is None:
            self.first_hidden = item

    def close(self) -> None:
        if self.first_hidden is not None:
            hidden = self.count - MAX_LIST_ERRORS
            self.report.add(self.path, f"{hidden} more problem{'s' if hidden > 1 else ''} in "
                            f"'{self.path[-1]}' from here on",
                            self.report.marks[self.path + (self.first_hidden,)],
                            "fix the ones above first")


def _build(data: dict, path: str, report: _Report) -> Spec:
    rules = []
    for number, raw in enumerate(data["prune"], start=1):
        at = ("prune", number - 1)
        fields = {key: report.marks[at + (key,)] for key in raw}
        items = {key: [report.marks[at + (key, j)] for j in range(len(value))]
                 for key, value in raw.items() if isinstance(value, list)}
        rules.append(SpecRule(
            number=number, where=report.where(at), layer=raw.get("layer"), type=raw.get("type"),
            exclude=tuple(raw.get("exclude", ())),
            remove=tuple(raw["remove"]) if "remove" in raw else None,
            keep=tuple(raw["keep"]) if "keep" in raw else None,
            fraction=float(raw["fraction"]) if "fraction" in raw else None,
            count=raw.get("count"), criterion=raw.get("criterion", "l1"),
            round_to=raw.get("round_to"), min_keep=raw.get("min_keep"),
            optional=raw.get("optional", False), exact=raw.get("exact", True),
            unit=raw.get("unit", OUTPUTS), locations=_Locations(path, fields, items)))
    model, data_path = (data.get(key) for key in ("model", "data"))
    model, data_path = (None if p is None else os.path.normpath(os.path.join(os.path.dirname(path), p))
                        for p in (model, data_path))
    top = {key: report.where((key,)) for key in ("model", "data", "loss", "target", "finetune")
           if key in data}
    return Spec(path=path, version=data["version"], model=model, rules=tuple(rules), data=data_path,
                loss=data.get("loss"), target=data.get("target"), finetune=data.get("finetune"),
                locations=top)


class _Locations(Mapping[str, str]):
    """Read-only ``'remove'``/``'remove[3]'`` -> ``'file:line:col'``, formatted on demand."""

    def __init__(self, file: str, fields: dict[str, Any], items: dict[str, list[Any]]):
        self._file, self._fields, self._items = file, fields, items

    def __getitem__(self, key: str) -> str:
        mark = self._fields.get(key)
        if mark is None:
            name, _, index = key.partition("[")
            marks = self._items.get(name, ())
            if not (index.endswith("]") and index[:-1].isdigit() and int(index[:-1]) < len(marks)):
                raise KeyError(key)
            mark = marks[int(index[:-1])]
        return f"{self._file}:{mark.line + 1}:{mark.column + 1}"

    def __iter__(self) -> Iterator[str]:
        yield from self._fields
        for name, marks in self._items.items():
            yield from (f"{name}[{j}]" for j in range(len(marks)))

    def __len__(self) -> int:
        return len(self._fields) + sum(map(len, self._items.values()))


def _label(number: int, layer: Any, type_: Any) -> str:
    parts = [f"layer {_clip(layer)!r}"] if isinstance(layer, str) and layer else []
    parts += [f"type {_clip(type_)}"] if isinstance(type_, str) and type_ else []
    return f"rule {number}" + (f" ({', '.join(parts)})" if parts else "")


def _field_name(path: tuple) -> str:
    """``'remove'``, ``'exclude[1]'``: a value's name inside its rule (or the file)."""
    rest = path[2:] if path[:1] == ("prune",) and len(path) >= 2 else path
    if not rest:
        return "the rule" if path else "the spec"
    return repr(str(rest[0]) + "".join(f"[{p}]" for p in rest[1:]))


def _describe(value: Any) -> str:
    """``string 'half'``, ``boolean true``, ``a list``: what the user wrote, in YAML words."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else f"boolean {str(value).lower()}"
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "a mapping"
    kind = {int: "integer", float: "number", str: "string"}.get(type(value), type(value).__name__)
    return f"{kind} {_clip(repr(value) if isinstance(value, str) else str(value))}"


def _as_items(value) -> str:
    """A scalar written as list items: ``"1,2"`` -> ``1, 2`` (numbers unquoted), else as JSON."""
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+(\s*,\s*-?\d+)*\s*", value):
        return ", ".join(part.strip() for part in value.split(","))
    return json.dumps(value, default=str)
