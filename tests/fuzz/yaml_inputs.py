"""Hypothesis strategies for spec *files*: generated YAML, mutations of real specs, raw bytes.

``documents()`` builds values from the spec's own vocabulary (right keys, wrong keys, every scalar
type including huge, negative and non-finite numbers, nested lists and mappings) and dumps them in
block or flow style, sometimes with an anchor and aliases. ``mutations(text)`` damages a real spec:
cut it anywhere, flip, insert or delete bytes, or swap a value for one of another type.
"""

from __future__ import annotations

import re

import yaml
from hypothesis import strategies as st

__all__ = ["documents", "mutations", "raw", "TYPE_SWAPS"]

KEYS = ["version", "model", "prune", "layer", "type", "exclude", "remove", "keep", "fraction",
        "count", "criterion", "round_to", "min_keep", "optional", "exact"]

SCALARS = st.one_of(
    st.integers(-3, 20), st.integers(-(2**70), 2**70), st.sampled_from([0, 1, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 0.5, 1.0, 1e308]),
    st.booleans(), st.none(), st.text(max_size=12),
    st.sampled_from(["fc1", "conv*", "a/b", "", "l1", "l2", "Dense", "nope", "1", "-1", "yes",
                     "~", "2024-01-01", "0x1F", "1_000", ".inf", "<<", "*", "&"]))

VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=6)),
    max_leaves=40)


@st.composite
def rules(draw) -> dict:
    rule = {}
    for key in draw(st.lists(st.sampled_from(KEYS[3:]), min_size=1, max_size=5, unique=True)):
        if key in ("remove", "keep", "exclude") and draw(st.booleans()):
            rule[key] = draw(st.lists(st.integers(-2, 40), max_size=8))
        elif key in ("layer", "type") and draw(st.booleans()):
            rule[key] = draw(st.sampled_from(["fc1", "conv*", "backbone/conv2", "Dense"]))
        else:
            rule[key] = draw(VALUES)
    return rule


@st.composite
def valid_rules(draw) -> dict:
    rule = {"layer": draw(st.sampled_from(["fc1", "conv*", "backbone/conv2", "block?_c[12]"]))}
    what = draw(st.sampled_from(["remove", "keep", "fraction", "count"]))
    if what in ("remove", "keep"):
        rule[what] = draw(st.lists(st.integers(0, 2**40), min_size=1, max_size=8, unique=True))
    elif what == "fraction":
        rule[what] = draw(st.floats(0.001, 0.999))
    else:
        rule[what] = draw(st.integers(1, 10**6))
    if what in ("fraction", "count") and draw(st.booleans()):
        rule["criterion"] = draw(st.sampled_from(["l1", "l2"]))
    for key, values in (("exclude", st.lists(st.sampled_from(["a*", "stem"]), min_size=1)),
                        ("optional", st.booleans()), ("exact", st.booleans()),
                        ("round_to", st.integers(1, 64)), ("min_keep", st.integers(1, 64))):
        if draw(st.integers(0, 3)) == 0:
            rule[key] = draw(values)
    return rule


@st.composite
def documents(draw) -> str:
    """YAML text of a spec-like document (sometimes valid, mostly slightly or badly wrong)."""
    if draw(st.integers(0, 4)) == 0:
        doc = draw(VALUES)
    else:
        valid = st.lists(valid_rules(), min_size=1, max_size=4)
        prune = draw(st.one_of(valid, valid, valid,
                               st.lists(st.one_of(valid_rules(), rules()), max_size=4), VALUES))
        if isinstance(prune, list) and prune and draw(st.booleans()):
            prune += [prune[0]] * draw(st.integers(1, 3))   # safe_dump writes &id001 / *id001
        doc = {"version": draw(st.sampled_from([1, 1, 1, 1, None, 2, "1", 1.0, True])),
               "prune": prune}
        if draw(st.integers(0, 3)) == 0:
            doc[draw(st.sampled_from(KEYS + ["extra"]))] = draw(VALUES)
    flow = draw(st.sampled_from([None, True, False]))
    try:
        return yaml.safe_dump(doc, default_flow_style=flow, sort_keys=draw(st.booleans()),
                              allow_unicode=draw(st.booleans()))
    except (yaml.YAMLError, ValueError, UnicodeEncodeError):     # e.g. a lone surrogate
        return repr(doc)


TYPE_SWAPS = ["[1, 2]", "{a: 1}", "x", "true", "null", "1.5", "-3", "99999999999999999999999",
              "!!python/object/apply:os.system ['true']", "&a [*a]", "'quoted'", "[", "}", "\t"]
_VALUE = re.compile(r"(?<=: )[^\n]+|(?<=\[)[0-9]+|(?<=, )[0-9]+")


@st.composite
def mutations(draw, text: str) -> bytes:
    """``text`` damaged once or a few times."""
    data = bytearray(text.encode("utf-8"))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["cut", "flip", "insert", "delete", "swap"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if how == "cut":
            del data[at:]
        elif how == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4) | st.sampled_from(
                [b"\xff", b"\x00", b"\t", b"&x ", b"*x", b"- ", b": ", b"\n  ", b"[", b"{", b"!!"]))
        elif how == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        else:
            source = bytes(data).decode("utf-8", "replace")
            spans = [m.span() for m in _VALUE.finditer(source)]
            if spans:
                start, end = draw(st.sampled_from(spans))
                source = source[:start] + draw(st.sampled_from(TYPE_SWAPS)) + source[end:]
                data = bytearray(source.encode("utf-8"))
    return bytes(data)


raw = st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-8",
                                                                                       "surrogatepass")))
