"""The spec stage: a YAML file in, an immutable ``Spec`` out, or every mistake with its line.

Needs no model. bytes -> UTF-8 text -> YAML nodes (``yaml.compose`` keeps each node's line and
column; nothing is constructed) -> plain values and a ``path -> mark`` table -> jsonschema for the
structure, Python for what a schema words badly (exactly one of, duplicates, criterion placement).
A jsonschema error's ``absolute_path`` finds its mark, so every message points at a line.

>>> spec = parse_spec("version: 1\\nprune:\\n  - layer: fc1\\n    remove: [1, 10]\\n", "s.yaml")
>>> spec.rules[0].remove, spec.rules[0].location("remove", 1)
((1, 10), 's.yaml:4:17')
"""

from __future__ import annotations

import copy
import difflib
import functools
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
           "SUPPORTED_VERSIONS", "MAX_VALUES"]

SUPPORTED_VERSIONS = (1,)
MAX_VALUES = 1_000_000  # YAML aliases can expand a tiny file into billions of values

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
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 4x faster, depth-limited


class _Loader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """Used to compose only. Decimal ints skip yaml's regex loop: 100k indices load 2x faster."""

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode and implicit[0] and _is_plain_int(value):
            return _INT
        return super().resolve(kind, value, implicit)


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
    """The published schema minus per-index checks (``_check_indices`` does them in one fast pass,
    with the first line of a duplicate), and with ``1.0`` and ``true`` not counting as integers."""
    schema = copy.deepcopy(_schema())
    del schema["$defs"]["indices"]["items"], schema["$defs"]["indices"]["uniqueItems"]
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine("integer", lambda _, v: type(v) is int)
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


def _parse(text: str | bytes, path: str) -> Spec:
    text = _decode(text, path)
    root = _compose(text, path)
    if root is None:
        raise SpecError("the spec is empty", where=f"{path}:1:1",
                        hint="start with 'version: 1' and a 'prune:' list")
    if "&" in text:  # only anchors let nodes be shared, so only then can a file expand or loop
        _check_size(root, path)
    report = _Report(path)
    data = report.data = _convert(root, report)
    if not isinstance(data, dict):
        report.raise_if_any()  # a refused tag on the whole document says more than "got null"
        raise SpecError("the spec must be a mapping with 'version' and 'prune', got "
                        + _describe(data), where=report.where(()))
    version = data.get("version")
    if type(version) is int and version not in SUPPORTED_VERSIONS:  # the rest may be another format
        raise SpecError(f"unsupported spec version {version}", where=report.where(("version",)),
                        hint="supported versions: " + ", ".join(map(str, SUPPORTED_VERSIONS)))
    _check_schema(data, report)
    rules = data.get("prune")
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


def _compose(text: str, path: str) -> yaml.Node | None:
    """Parse to nodes, turning YAML errors into one located line."""
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.reader.ReaderError as exc:  # a control character; libyaml counts UTF-8 bytes
        at = exc.position
        if _BASE_LOADER is not yaml.SafeLoader:
            at = len(text.encode("utf-8")[:at].decode("utf-8", "ignore"))
        where = f"{path}:{text.count(chr(10), 0, at) + 1}:{at - text.rfind(chr(10), 0, at)}"
        raise SpecError(f"invalid YAML: {exc.reason} (character {exc.character:#04x})",
                        where=where) from None
    except yaml.MarkedYAMLError as exc:
        mark, context, problem = exc.problem_mark or exc.context_mark, exc.context, exc.problem
        cm = exc.context_mark
        if not problem or problem.startswith("but "):  # "expected a single document, but ..."
            message = ", ".join(filter(None, (context, problem)))
        elif context and cm and (cm.line, cm.column) != (mark.line, mark.column):
            message = (f"{problem} ({context} that starts at line {cm.line + 1},"
                       f" column {cm.column + 1})")
        else:
            message = problem
        if mark is None:
            raise SpecError("invalid YAML: " + " ".join(message.split()), where=path) from None
        line = (text.split("\n") + [""])[mark.line]
        tab = line[mark.column:mark.column + 1] == "\t"
        raise SpecError("invalid YAML: " + " ".join(message.split()),
                        where=f"{path}:{mark.line + 1}:{mark.column + 1}",
                        hint="indent with spaces, not tabs" if tab else None) from None
    except RecursionError:  # only the pure-Python parser recurses; libyaml stops at depth 1000
        raise SpecError("invalid YAML: nesting is too deep", where=path) from None


def _check_size(root: yaml.Node, path: str) -> None:
    """Count values as if aliases were expanded, once per distinct node, so bombs fail fast."""
    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return node.value if isinstance(node, yaml.SequenceNode) else []

    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key, m = id(node), node.start_mark
        if done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children(node))
            if sizes[key] > MAX_VALUES:
                raise SpecError(f"the spec expands to more than {MAX_VALUES} values through YAML "
                                "aliases", where=f"{path}:{m.line + 1}:{m.column + 1}",
                                hint="write the values out instead of nesting aliases")
        elif key in open_nodes:
            raise SpecError("a YAML alias refers to a node that contains it",
                            where=f"{path}:{m.line + 1}:{m.column + 1}")
        elif key not in sizes:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children(node) if id(c) not in sizes)


def _convert(root: yaml.Node, report: _Report) -> Any:
    """Build plain values iteratively (deep files cannot overflow the stack), recording marks."""
    holder: list[Any] = [None]
    stack: list[tuple[yaml.Node, tuple, Any, Any]] = [(root, (), holder, 0)]
    marks, keys = report.marks, report.keys
    while stack:
        node, path, parent, slot = stack.pop()
        marks[path] = node.start_mark
        if isinstance(node, yaml.ScalarNode):
            parent[slot] = _scalar(node, path, report)
        elif node.tag not in (_Y + "seq", _Y + "map"):
            report.bad(path, f"unsupported YAML tag {_short_tag(node.tag)!r}", node.start_mark,
                       "specs hold plain values only; remove the tag")
        elif isinstance(node, yaml.SequenceNode):
            items = parent[slot] = [None] * len(node.value)
            for i, child in enumerate(node.value):
                if isinstance(child, yaml.ScalarNode):  # inline: index lists are long
                    marks[path + (i,)] = child.start_mark
                    items[i] = _scalar(child, path + (i,), report)
                else:
                    stack.append((child, path + (i,), items, i))
        else:
            mapping = parent[slot] = {}
            for key_node, value_node in node.value:
                key, mark = key_node.value, key_node.start_mark
                if key_node.tag == _Y + "merge":
                    report.add(path, "YAML merge keys ('<<') are not supported", mark,
                               "write the keys out")
                elif not isinstance(key_node, yaml.ScalarNode):
                    report.add(path, "mapping keys must be plain names", mark)
                elif key in mapping:  # yaml would silently keep the last one
                    first = keys[path + (key,)]
                    report.add(path, f"duplicate key {key!r}", mark,
                               f"first given at line {first.line + 1}, column {first.column + 1}")
                else:
                    mapping[key], keys[path + (key,)] = None, mark
                    stack.append((value_node, path + (key,), mapping, key))
    return holder[0]


def _scalar(node: yaml.ScalarNode, path: tuple, report: _Report) -> Any:
    tag = node.tag
    if tag == _Y + "str":
        return node.value
    if tag == _INT and _is_plain_int(node.value):
        return int(node.value)
    if tag not in _SCALAR_TAGS:  # e.g. !!python/object: refused, never constructed
        report.bad(path, f"unsupported YAML tag {_short_tag(tag)!r}", node.start_mark,
                   "specs hold plain values only; remove the tag")
        return None
    try:
        return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, node)
    except (ValueError, OverflowError) as exc:  # 5000-digit ints, 2024-13-45
        kind = tag.removeprefix(_Y)
        report.bad(path, f"integer is too large ({len(node.value)} characters)" if kind == "int"
                   else f"cannot read {_clip(node.value)!r} as a {kind}: {exc}", node.start_mark)
        return None


def _is_plain_int(text: str) -> bool:
    """``0``, ``12``: what yaml 1.1 also reads as decimal (``010`` is octal there), checked fast."""
    return text.isdigit() and text.isascii() and (text[0] != "0" or text == "0") and len(text) < 20


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_Y) if tag.startswith(_Y) else tag


class _Report:
    """Collects mistakes with their marks; rule labels are added last, when rules are known."""

    def __init__(self, path: str):
        self.path, self.data = path, None
        self.marks: dict[tuple, Any] = {}  # path of a value -> mark of the value
        self.keys: dict[tuple, Any] = {}  # path of a value -> mark of its key
        self._found: list[tuple[tuple, str, Any, str | None]] = []
        self._bad: set[tuple] = set()  # values already reported as unreadable: no more noise

    def where(self, path: tuple, mark: Any = None) -> str:
        mark = mark or self.marks[path]
        return f"{self.path}:{mark.line + 1}:{mark.column + 1}"

    def add(self, path: tuple, text: str, mark: Any, hint: str | None = None) -> None:
        self._found.append((path, text, mark, hint))

    def bad(self, path: tuple, text: str, mark: Any, hint: str | None = None) -> None:
        self._bad.add(path)
        self.add(path, text, mark, hint)

    def is_bad(self, path: tuple) -> bool:
        return bool(self._bad) and any(path[:i] in self._bad for i in range(len(path) + 1))

    def raise_if_any(self) -> None:
        errors: dict[tuple[str, str], SpecError] = {}  # dict: deduplicated, first one wins
        for path, text, mark, hint in sorted(self._found, key=lambda f: (f[2].line, f[2].column)):
            error = SpecError(self._prefix(path) + text, where=self.where(path, mark), hint=hint)
            errors.setdefault((error.where, error.message), error)
        if errors:
            first, *others = errors.values()
            raise SpecError(first.message, first.where, first.hint, others=tuple(others))

    def _prefix(self, path: tuple) -> str:
        if len(path) < 2 or path[0] != "prune" or not isinstance(path[1], int):
            return ""
        rule = self.data["prune"][path[1]]
        rule = rule if isinstance(rule, dict) else {}
        return _label(path[1] + 1, rule.get("layer"), rule.get("type")) + ": "


def _check_schema(data: dict, report: _Report) -> None:
    by_path: dict[tuple, list] = {}
    for error in _validator().iter_errors(data):
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
        for key in (k for k in value if k not in valid):
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "valid keys: " + ", ".join(valid)
            report.add(path + (key,), f"unknown key {key!r}", report.keys[path + (key,)], hint)
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
    meant = {m for k in rule if k not in valid for m in difflib.get_close_matches(k, valid, n=1)}
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
    fraction = rule.get("fraction")
    if isinstance(fraction, float) and math.isnan(fraction):  # nan slips past < and >
        report.add(path, "'fraction' must be between 0 and 1 (exclusive), got nan",
                   report.marks[path + ("fraction",)])


def _check_indices(path: tuple, items: list, report: _Report) -> None:
    """One pass over a possibly 100k-long list: types, signs, duplicates with the first line."""
    field, first, marks = path[-1], {}, report.marks
    for j, x in enumerate(items):
        if type(x) is not int:  # bool is an int subclass but not an index
            if not report.is_bad(path + (j,)):
                report.add(path, f"'{field}[{j}]' must be an integer, got {_describe(x)}",
                           marks[path + (j,)])
        elif x < 0:
            report.add(path, f"negative index {_clip(str(x))} in '{field}'", marks[path + (j,)],
                       "channel indices start at 0")
        elif x in first:
            m = marks[path + (first[x],)]
            report.add(path, f"duplicate index {_clip(str(x))} in '{field}'", marks[path + (j,)],
                       f"first given at line {m.line + 1}, column {m.column + 1}")
        else:
            first[x] = j


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
