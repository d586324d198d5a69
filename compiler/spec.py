"""The spec stage: a YAML file in, an immutable ``Spec`` out, or every mistake with its line.

Needs no model. bytes -> UTF-8 text -> YAML *events* (libyaml's parser: each carries its line and
column; no Python object is ever constructed from a tag) -> plain values and a ``path -> mark``
table, built in one iterative pass -> jsonschema for the structure, Python for what a schema words
badly (exactly one of, duplicates, criterion placement). A jsonschema error's ``absolute_path``
finds its mark, so every message points at a line.

Hostile files stay cheap: at most ``MAX_BYTES`` bytes and ``MAX_VALUES`` values (counted as if
every alias were expanded, so an alias bomb stops after ``MAX_VALUES``, not after billions), at most
``MAX_RULES`` rules; nesting is bounded by libyaml (depth 1000) and never recurses in Python; a
long list reports its first ``MAX_LIST_ERRORS`` problems and how many more there are.

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
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Iterator, Mapping

import jsonschema
import yaml
from yaml.constructor import SafeConstructor

from compiler.errors import SpecError

__all__ = ["Rule", "Spec", "load_spec", "parse_spec", "spec_schema", "spec_schema_text",
           "SUPPORTED_VERSIONS", "MAX_BYTES", "MAX_VALUES", "MAX_RULES", "MAX_DEPTH",
           "MAX_LIST_ERRORS", "MAX_ERRORS"]

SUPPORTED_VERSIONS = (1,)
MAX_BYTES = 1 << 20        # 1 MiB; 100,000 written-out indices take about 0.7 MB
MAX_VALUES = 150_000       # after alias expansion: a tiny file can otherwise mean billions
MAX_RULES = 1_000
MAX_DEPTH = 32             # a spec nests 4 deep; jsonschema recurses once per level
MAX_LIST_ERRORS = 10       # per index list; the rest are counted in one more line
MAX_ERRORS = 50            # per file; the rest are counted in one more line

_SCHEMA_FILE = Path(__file__).with_name("schemas") / "spec.schema.json"
_Y = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_Y + t for t in ("null", "bool", "int", "float", "str", "timestamp"))
_INT = _Y + "int"
_CONSTRUCTOR = SafeConstructor()
_SELECTORS = ("remove", "keep", "fraction", "count")
_EXPECTED = {"integer": "an integer", "number": "a number", "string": "a string",
             "array": "a list", "object": "a mapping", "boolean": "true or false"}
_REQUIRED_HINTS = {"version": "add 'version: 1'", "prune": "add a 'prune:' list of rules"}
_WORDED_IN_PYTHON = frozenset({"anyOf", "oneOf", "allOf", "dependentSchemas"})
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 5x faster, depth-limited
_RESOLVER = yaml.resolver.Resolver()       # YAML 1.1 implicit types, as yaml.safe_load has them
_COLLECTION_TAGS = (None, "!", _Y + "seq", _Y + "map")
_SKIP = object()                           # a slot whose value is reported and dropped


@dataclass(frozen=True)
class Rule:
    """One entry of ``prune:``, defaults applied; ``locations`` lets later stages cite its line."""

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
    locations: Mapping[str, str] = dc_field(default_factory=dict, compare=False, repr=False)

    def location(self, field: str, item: int | None = None) -> str:
        """Where ``field`` (or its ``item``-th list entry) is written; falls back to the rule."""
        if item is not None and f"{field}[{item}]" in self.locations:
            return self.locations[f"{field}[{item}]"]
        return self.locations.get(field, self.where)

    def label(self) -> str:
        """``rule 2 (layer 'fc1')``: how every message names this rule."""
        return _label(self.number, self.layer, self.type)


@dataclass(frozen=True)
class Spec:
    """A checked spec. ``model`` is already resolved relative to the spec file."""

    path: str
    version: int
    model: str | None
    rules: tuple[Rule, ...]


def load_spec(path: str | os.PathLike) -> Spec:
    """Read and check a spec file; any problem is a ``SpecError`` (all of them, in file order)."""
    name = os.fsdecode(path)
    try:
        data = Path(name).read_bytes()
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read spec: {getattr(exc, 'strerror', None) or exc}",
                        where=name) from None
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


def spec_schema() -> dict:
    """The JSON Schema of spec version 1 (a fresh copy: callers may change it)."""
    return copy.deepcopy(_schema())


def spec_schema_text() -> str:
    """The schema as indented JSON, for ``prunec schema`` and editors."""
    return json.dumps(_schema(), indent=2) + "\n"


@functools.cache
def _schema() -> dict:
    return json.loads(_SCHEMA_FILE.read_text(encoding="utf-8"))


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
    if len(text) > MAX_BYTES:
        raise SpecError(f"the spec is {len(text)} bytes long, more than the {MAX_BYTES} a spec may "
                        "be", where=path, hint="for a very wide layer, list the channels to keep "
                        "instead of those to remove, or use 'fraction' or 'count'")
    text = _decode(text, path)
    report = _Report(path)
    data = report.data = _load(text, report)
    if data is _SKIP:
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
            _check_rule(("prune", number), rule, report)
    report.raise_if_any()
    return _build(data, path, report)


def _decode(text: str | bytes, path: str) -> str:
    if isinstance(text, (bytes, bytearray)):
        data = bytes(text)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            at, line = exc.start, data.count(b"\n", 0, exc.start) + 1
            col = at - data.rfind(b"\n", 0, at)
            raise SpecError(f"the spec is not UTF-8 text: byte 0x{data[at]:02x} at offset {at}",
                            where=f"{path}:{line}:{col}", hint="save the file as UTF-8") from None
    return text.removeprefix("\ufeff")


def _yaml_error(exc: yaml.YAMLError, text: str, path: str) -> SpecError:
    """A YAML syntax error as one located line."""
    if isinstance(exc, yaml.reader.ReaderError):  # a control character; libyaml counts UTF-8 bytes
        at = exc.position
        if _BASE_LOADER is not yaml.SafeLoader:
            at = len(text.encode("utf-8")[:at].decode("utf-8", "ignore"))
        where = f"{path}:{text.count(chr(10), 0, at) + 1}:{at - text.rfind(chr(10), 0, at)}"
        return SpecError(f"invalid YAML: {exc.reason} (character {exc.character:#04x})", where=where)
    if not isinstance(exc, yaml.MarkedYAMLError):
        return SpecError("invalid YAML: " + " ".join(str(exc).split()), where=path)
    mark, context, problem = exc.problem_mark or exc.context_mark, exc.context, exc.problem
    cm = exc.context_mark
    if not problem or problem.startswith("but "):  # "expected a single document, but ..."
        message = ", ".join(filter(None, (context, problem)))
    elif context and cm and mark and (cm.line, cm.column) != (mark.line, mark.column):
        message = (f"{problem} ({context} that starts at line {cm.line + 1},"
                   f" column {cm.column + 1})")
    else:
        message = problem
    if mark is None:
        return SpecError("invalid YAML: " + " ".join(message.split()), where=path)
    line = (text.split("\n") + [""])[mark.line]
    tab = line[mark.column:mark.column + 1] == "\t"
    return SpecError("invalid YAML: " + " ".join(message.split()),
                     where=f"{path}:{mark.line + 1}:{mark.column + 1}",
                     hint="indent with spaces, not tabs" if tab else None)


class _Frame:
    """An open sequence or mapping while loading: where it is and what comes next in it."""

    __slots__ = ("value", "path", "anchor", "start", "key")

    def __init__(self, value, path: tuple, anchor, start: int):
        self.value, self.path, self.anchor, self.start = value, path, anchor, start
        self.key: Any = None       # mappings: the key whose value comes next (None: a key comes)


def _load(text: str, report: _Report) -> Any:
    """YAML events -> plain values, iteratively, recording the mark of every value and key.

    Returns ``_SKIP`` for a stream without a document. An alias stands for its anchor's value (the
    same object) and counts that value's size again; its paths point back at the anchor's marks.
    """
    marks, keys, path_name = report.marks, report.keys, report.path
    anchors: dict[str, tuple[Any, tuple, int]] = {}        # name -> (value, path, size)
    open_anchors: set[str] = set()
    stack: list[_Frame] = []
    root: list[Any] = [_SKIP]
    count = skip = documents = 0

    def too_many(mark, alias: bool) -> SpecError:
        what = "expands to" if alias else "holds"
        how = " through YAML aliases" if alias else ""
        return SpecError(f"the spec {what} more than {MAX_VALUES} values{how}", where=_at(path_name, mark),
                         hint="write the values out instead of nesting aliases" if alias else
                         "for a very wide layer, list the channels to keep instead of those to "
                         "remove, or use 'fraction' or 'count'")

    def slot(event) -> tuple | None:
        """The path the next value goes to, or None if it is a mapping key or dropped."""
        if not stack:
            return ()
        top = stack[-1]
        if isinstance(top.value, list):
            return top.path + (len(top.value),)
        if top.key is None:                                 # this node is a key
            return None
        return _SKIP if top.key is _SKIP else top.path + (top.key,)

    def put(path: tuple, value: Any) -> None:
        if not stack:
            root[0] = value
            return
        top = stack[-1]
        if isinstance(top.value, list):
            top.value.append(value)
        else:
            if path is not _SKIP:
                top.value[top.key] = value
            top.key = None

    def key(event) -> int:
        """A node in key position: a plain name, or reported (and its value dropped)."""
        top, mark = stack[-1], event.start_mark
        if type(event) is not yaml.ScalarEvent:
            report.add(top.path, "mapping keys must be plain names", mark)
            top.key = _SKIP
            return 1 if type(event) in (yaml.SequenceStartEvent, yaml.MappingStartEvent) else 0
        name = event.value
        if event.tag is None and event.implicit[0] and name == "<<":
            report.add(top.path, "YAML merge keys ('<<') are not supported", mark, "write the keys out")
            top.key = _SKIP
        elif top.path + (name,) in keys:                    # yaml would keep the last one
            first = keys[top.path + (name,)]
            report.add(top.path, f"duplicate key {name!r}", mark,
                       f"first given at line {first.line + 1}, column {first.column + 1}")
            top.key = _SKIP
        else:
            keys[top.path + (name,)] = mark
            top.key = name
        return 0

    items, items_path = None, ()                            # the open list, for the fast path
    loader = None
    try:
        loader = _BASE_LOADER(text)       # the pure-Python reader checks every character here
        while True:
            event = loader.get_event()
            kind = type(event)
            if kind is yaml.ScalarEvent and items is not None and not skip and \
                    event.anchor is None:                   # a list item: most values of a spec
                count += 1
                if count > MAX_VALUES:
                    raise too_many(event.start_mark, alias=False)
                path = items_path + (len(items),)
                marks[path] = event.start_mark
                items.append(_scalar(event, path, report))
                continue
            if skip:                                        # inside a dropped subtree
                count += 1
                if count > MAX_VALUES:
                    raise too_many(event.start_mark, alias=False)
                if kind in (yaml.SequenceStartEvent, yaml.MappingStartEvent):
                    skip += 1
                elif kind in (yaml.SequenceEndEvent, yaml.MappingEndEvent):
                    skip -= 1
                continue
            if kind in (yaml.SequenceEndEvent, yaml.MappingEndEvent):
                frame = stack.pop()
                if frame.anchor is not None:
                    anchors[frame.anchor] = (frame.value, frame.path, count - frame.start + 1)
                    open_anchors.discard(frame.anchor)
                items, items_path = _open_list(stack)
                continue
            if kind is yaml.StreamEndEvent:
                break
            if kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise SpecError("invalid YAML: expected a single document in the stream, but "
                                    "found another document", where=_at(path_name, event.start_mark))
                continue
            if kind not in (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent,
                            yaml.AliasEvent):
                continue                                    # stream and document ends
            path = slot(event)
            if path is None:
                skip = key(event)
                continue
            mark = event.start_mark
            if path is _SKIP:                               # the value of a refused key
                put(path, None)
                skip = int(kind in (yaml.SequenceStartEvent, yaml.MappingStartEvent))
                continue
            if kind is yaml.AliasEvent:
                name = event.anchor
                if name in open_anchors:
                    raise SpecError("a YAML alias refers to a node that contains it",
                                    where=_at(path_name, mark))
                if name not in anchors:
                    raise SpecError(f"invalid YAML: found undefined alias {name!r}",
                                    where=_at(path_name, mark))
                value, anchored, size = anchors[name]
                count += size
                if count > MAX_VALUES:
                    raise too_many(mark, alias=True)
                marks[path] = marks[anchored]
                report.aliases[path] = anchored
                put(path, value)
                continue
            count += 1
            if count > MAX_VALUES:
                raise too_many(mark, alias=False)
            marks[path] = mark
            if kind is yaml.ScalarEvent:
                value = _scalar(event, path, report)
                if event.anchor is not None:
                    anchors[event.anchor] = (value, path, 1)
                put(path, value)
                continue
            if event.tag not in _COLLECTION_TAGS:           # !!set, !!omap, !!python/...
                report.bad(path, f"unsupported YAML tag {_short_tag(event.tag)!r}", mark,
                           "specs hold plain values only; remove the tag")
                if event.anchor is not None:
                    anchors[event.anchor] = (None, path, 1)
                put(path, None)
                skip = 1
                continue
            if len(stack) >= MAX_DEPTH:
                raise SpecError(f"the spec nests more than {MAX_DEPTH} levels deep",
                                where=_at(path_name, mark), hint="a spec nests 4 levels: "
                                "prune -> rule -> remove -> index")
            value = [] if kind is yaml.SequenceStartEvent else {}
            put(path, value)
            stack.append(_Frame(value, path, event.anchor, count))
            items, items_path = _open_list(stack)
            if event.anchor is not None:
                open_anchors.add(event.anchor)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, path_name) from None
    finally:
        if loader is not None:
            loader.dispose()
    return root[0]


def _open_list(stack: list[_Frame]) -> tuple[list | None, tuple]:
    if stack and isinstance(stack[-1].value, list):
        return stack[-1].value, stack[-1].path
    return None, ()


def _at(path: str, mark) -> str:
    return f"{path}:{mark.line + 1}:{mark.column + 1}"


def _scalar(event: yaml.ScalarEvent, path: tuple, report: _Report) -> Any:
    tag, value = event.tag, event.value
    if tag is None or tag == "!":
        if tag is None and event.implicit[0] and _is_plain_int(value):
            return int(value)                       # the common case, without yaml's regex loop
        tag = _RESOLVER.resolve(yaml.ScalarNode, value, event.implicit)
    if tag == _Y + "str":
        return value
    if tag == _INT and _is_plain_int(value):
        return int(value)
    if tag not in _SCALAR_TAGS:  # e.g. !!python/object: refused, never constructed
        report.bad(path, f"unsupported YAML tag {_short_tag(tag)!r}", event.start_mark,
                   "specs hold plain values only; remove the tag")
        return None
    node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
    try:
        return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, node)
    except (ValueError, OverflowError) as exc:  # 5000-digit ints, 2024-13-45
        kind = tag.removeprefix(_Y)
        report.bad(path, f"integer is too large ({len(value)} characters)" if kind == "int"
                   else f"cannot read {_clip(value)!r} as a {kind}: {exc}", event.start_mark)
        return None


def _is_plain_int(text: str) -> bool:
    """``0``, ``12``: what yaml 1.1 also reads as decimal (``010`` is octal there), checked fast."""
    return text.isdigit() and text.isascii() and (text[0] != "0" or text == "0") and len(text) < 20


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_Y) if tag.startswith(_Y) else tag


class _Marks(dict):
    """``path -> mark``; a path through an alias finds the mark under the alias' anchor."""

    def __init__(self, aliases: dict[tuple, tuple]):
        super().__init__()
        self._aliases = aliases

    def canonical(self, path: tuple) -> tuple:
        """``path`` with every alias on it replaced by the path of its anchor."""
        if not self._aliases:
            return path
        for i in range(len(path), 0, -1):
            anchored = self._aliases.get(path[:i])
            if anchored is not None:
                return self.canonical(anchored + path[i:])
        return path

    def __missing__(self, path: tuple):
        canonical = self.canonical(path)
        if canonical == path:
            raise KeyError(path)
        return self[canonical]


class _Report:
    """Collects mistakes with their marks; rule labels are added last, when rules are known."""

    def __init__(self, path: str):
        self.path, self.data = path, None
        self.aliases: dict[tuple, tuple] = {}  # path of an alias -> path of its anchor
        self.marks = _Marks(self.aliases)  # path of a value -> mark of the value
        self.keys = _Marks(self.aliases)  # path of a value -> mark of its key
        self._found: list[tuple[tuple, str, Any, str | None]] = []
        self._bad: set[tuple] = set()  # values already reported as unreadable: no more noise
        self._dropped = 0               # mistakes beyond what is worth keeping, only counted

    def where(self, path: tuple, mark: Any = None) -> str:
        mark = mark or self.marks[path]
        return f"{self.path}:{mark.line + 1}:{mark.column + 1}"

    def add(self, path: tuple, text: str, mark: Any, hint: str | None = None) -> None:
        if len(self._found) < 4 * MAX_ERRORS:   # enough to sort the first MAX_ERRORS by line
            self._found.append((path, text, mark, hint))
        else:
            self._dropped += 1

    def bad(self, path: tuple, text: str, mark: Any, hint: str | None = None) -> None:
        self._bad.add(path)
        self.add(path, text, mark, hint)

    def is_bad(self, path: tuple) -> bool:
        if not self._bad:
            return False
        path = self.marks.canonical(path)
        return any(path[:i] in self._bad for i in range(len(path) + 1))

    def raise_if_any(self) -> None:
        errors: dict[tuple[str, str], SpecError] = {}  # dict: deduplicated, first one wins
        for path, text, mark, hint in sorted(self._found, key=lambda f: (f[2].line, f[2].column)):
            error = SpecError(self._prefix(path) + text, where=self.where(path, mark), hint=hint)
            errors.setdefault((error.where, error.message), error)
        if errors:
            first, *others = errors.values()
            if len(errors) + self._dropped > MAX_ERRORS:
                hidden = len(errors) + self._dropped - MAX_ERRORS + 1
                others = others[:MAX_ERRORS - 2] + [SpecError(
                    f"{hidden} more errors not shown", where=self.path, hint="fix the ones above first")]
            raise SpecError(first.message, first.where, first.hint, others=tuple(others))

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
            hint = f"write a list, e.g. [{_clip(json.dumps(value, default=str))}]"
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


def _check_rule(path: tuple, rule: dict, report: _Report) -> None:
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
    elif not given and not meant & set(_SELECTORS):
        report.add(path, f"{one_of} (found: none)", report.marks[path])
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
        rules.append(Rule(
            number=number, where=report.where(at), layer=raw.get("layer"), type=raw.get("type"),
            exclude=tuple(raw.get("exclude", ())),
            remove=tuple(raw["remove"]) if "remove" in raw else None,
            keep=tuple(raw["keep"]) if "keep" in raw else None,
            fraction=float(raw["fraction"]) if "fraction" in raw else None,
            count=raw.get("count"), criterion=raw.get("criterion", "l1"),
            round_to=raw.get("round_to"), min_keep=raw.get("min_keep"),
            optional=raw.get("optional", False), exact=raw.get("exact", True),
            locations=_Locations(path, fields, items)))
    model = data.get("model")
    if model is not None:
        model = os.path.normpath(os.path.join(os.path.dirname(path), model))
    return Spec(path=path, version=data["version"], model=model, rules=tuple(rules))


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


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
