"""Reading a spec file: bytes -> plain values, with the line and column of every value and key.

Safe and bounded whatever the file holds:

* YAML is read as libyaml *events*; no Python object is ever constructed from a tag (``!!python/...``
  and every other non-plain tag is reported, never run). Scalars get YAML 1.1's implicit types,
  exactly as ``yaml.safe_load`` gives them.
* One iterative pass, so depth never recurses in Python; at most ``MAX_BYTES`` bytes, ``MAX_VALUES``
  values counted as if every alias were expanded (an alias bomb stops after ``MAX_VALUES``, not
  after billions) and ``MAX_DEPTH`` levels, each refused with one located line.
* An alias is the same Python object as its anchor's value; paths through it find the anchor's marks.
* ``Report`` collects mistakes (at most ``MAX_ERRORS`` lines per file, then a count) and raises them
  together as one ``SpecError``.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from .errors import SpecError, clip

__all__ = ["read", "Report", "EMPTY", "MAX_BYTES", "MAX_VALUES", "MAX_DEPTH", "MAX_ERRORS"]

MAX_BYTES = 1 << 20        # 1 MiB; 100,000 written-out indices take about 0.7 MB
MAX_VALUES = 150_000       # after alias expansion: a tiny file can otherwise mean billions
MAX_DEPTH = 32             # a spec nests 4 deep; jsonschema recurses once per level
MAX_ERRORS = 50            # per file; the rest are counted in one more line

_Y = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_Y + t for t in ("null", "bool", "int", "float", "str", "timestamp"))
_INT, _FLOAT = _Y + "int", _Y + "float"
_CONSTRUCTOR = SafeConstructor()
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 5x faster, depth-limited
_RESOLVER = yaml.resolver.Resolver()       # YAML 1.1 implicit types, as yaml.safe_load has them
_COLLECTION_TAGS = (None, "!", _Y + "seq", _Y + "map")
_SKIP = EMPTY = object()                   # a slot whose value is dropped; a file without a document


def read(text: str | bytes, report: "Report") -> Any:
    """The values of a spec file (``EMPTY`` if it holds no document); marks go into ``report``."""
    path = report.path
    if len(text) > MAX_BYTES:
        raise SpecError(f"the spec is {len(text)} bytes long, more than the {MAX_BYTES} a spec may "
                        "be", where=path, hint="for a very wide layer, list the channels to keep "
                        "instead of those to remove, or use 'fraction' or 'count'")
    return _load(_decode(text, path), report)


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


def _load(text: str, report: Report) -> Any:
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


def _scalar(event: yaml.ScalarEvent, path: tuple, report: Report) -> Any:
    tag, value = event.tag, event.value
    if tag is None or tag == "!":
        if tag is None and event.implicit[0] and _is_plain_int(value):
            return int(value)                       # the common case, without yaml's regex loop
        tag = _RESOLVER.resolve(yaml.ScalarNode, value, event.implicit)
    if tag == _Y + "str":
        return value
    if tag == _INT and _is_plain_int(value):
        return int(value)
    if tag in (_INT, _FLOAT) and _not_decimal(value, tag, event.start_mark, path, report):
        return None
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
                   else f"cannot read {clip(value)!r} as a {kind}: {exc}", event.start_mark)
        return None


def _not_decimal(value: str, tag: str, mark, path: tuple, report: Report) -> bool:
    """Report a YAML 1.1 octal, hexadecimal, binary or base-60 number (``010`` is 8, ``0x10`` 16,
    ``1:20`` 80): nobody writing a channel index means that, and the value would pass silently."""
    digits = value.lstrip("+-").replace("_", "")
    if ":" in digits:
        kind = "a base-60 (sexagesimal)"
    elif tag == _FLOAT:
        return False
    elif digits[:2].lower() in ("0x", "0b"):
        kind = "a hexadecimal" if digits[1] in "xX" else "a binary"
    elif len(digits) > 1 and digits[0] == "0":
        kind = "an octal"
    else:
        return False
    node = yaml.ScalarNode(tag, value, mark, mark)
    reads = _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, node)
    meant = value[:len(value) - len(value.lstrip("+-"))] + (digits.lstrip("0") or "0")
    hint = (f"write {meant} without the leading zero (or {reads} if you meant octal); quote it "
            "if it is a name" if kind == "an octal" else
            f"write it in decimal ({reads}); quote it if it is a name")
    report.bad(path, f"{value!r} is {kind} number in YAML 1.1, which reads it as {reads}", mark,
               hint)
    return True


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


class Report:
    """Collects mistakes with their marks, and raises them together."""

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
        """What every message about ``path`` starts with (a subclass names the rule)."""
        return ""
