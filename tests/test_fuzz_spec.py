"""Fuzzing the spec front end: no input gives a traceback, a hang, or a constructed object.

Every input — generated YAML, damaged copies of the checked-in specs, raw bytes, and a catalogue
of hostile files (alias bombs, deep nesting, non-UTF-8, huge lists and numbers, Python tags) —
either parses, or raises a ``SpecError`` whose every line is one line, located in the file
(``file:line:col``, or ``file`` for whole-file limits), within a second of CPU time (the
thread's, so a loaded machine does not fail it; a hang in the parser still spends CPU).
"""

import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.errors import SpecError
from compiler.spec import MAX_BYTES, MAX_DEPTH, MAX_ERRORS, MAX_LIST_ERRORS, MAX_VALUES, parse_spec
from fuzz import yaml_inputs

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
TEXTS = [p.read_text() for p in SPECS]
PATH = "fuzz.yaml"
EXAMPLES = int(os.environ.get("PRUNEC_FUZZ_SPEC_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(data, path: str = PATH):
    """Parse ``data``; assert the promise; return the Spec or the list of error lines."""
    start = time.thread_time()
    try:
        result = parse_spec(data, path)
    except SpecError as error:
        result = [str(each) for each in error.all()]
    elapsed = time.thread_time() - start
    assert elapsed < 1.0, f"took {elapsed:.2f} s of CPU"
    if isinstance(result, list):
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        lines = len(text.splitlines())     # YAML also breaks lines at U+0085, U+2028, U+2029
        assert 1 <= len(result) <= MAX_ERRORS
        for text in result:
            assert len(text.splitlines()) == 1, repr(text)
            assert text.startswith(f"{path}: ") or text.startswith(f"{path}:"), text
            where = text[len(path) + 1:].split(": ", 1)[0]
            if where and where.split(":")[0].isdigit():
                line, column = map(int, where.split(":"))
                assert 1 <= line <= lines + 1 and column >= 1, text
    return result


# -- generated and damaged input ------------------------------------------------------------------

@FUZZ
@given(yaml_inputs.documents())
def test_generated_yaml_parses_or_is_refused_cleanly(text):
    outcome(text)


@FUZZ
@given(st.sampled_from(TEXTS).flatmap(yaml_inputs.mutations))
def test_damaged_specs_parse_or_are_refused_cleanly(data):
    outcome(data)


@FUZZ
@given(yaml_inputs.raw)
def test_raw_bytes_parse_or_are_refused_cleanly(data):
    outcome(data)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_every_truncation_of_a_checked_in_spec(spec):
    data = spec.read_bytes()
    refused = 0
    for end in range(len(data) + 1):
        refused += isinstance(outcome(data[:end]), list)
    assert not isinstance(outcome(data), list)
    assert refused > len(data) // 2          # most cuts lose 'prune' or split a list


@pytest.mark.parametrize("swap", yaml_inputs.TYPE_SWAPS)
def test_every_value_of_a_checked_in_spec_swapped_for_another_type(swap):
    for text in TEXTS:
        values = [m.span() for m in yaml_inputs._VALUE.finditer(text)
                  if not text[text.rfind("\n", 0, m.start()) + 1:].startswith("#")]
        for start, end in values[:40]:
            result = outcome(text[:start] + swap + text[end:])
            if swap in ("{a: 1}", "null", "1.5", "-3", "&a [*a]") or swap.startswith("!!"):
                assert isinstance(result, list), (text[start:end], swap)


# -- hostile files --------------------------------------------------------------------------------

def billion_laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "version: 1\n" + "\n".join(lines) + "\nprune: [{layer: x, remove: *a8}]\n"


HOSTILE = {
    "billion laughs": (billion_laughs(), f"the spec expands to more than {MAX_VALUES} values through YAML aliases"),
    "alias loop": ("version: 1\nprune: &p [*p]\n", "a YAML alias refers to a node that contains it"),
    "undefined alias": ("version: 1\nprune: [*nope]\n", "invalid YAML: found undefined alias 'nope'"),
    "10k nested flow lists": ("version: 1\nprune: " + "[" * 10_000 + "]" * 10_000 + "\n",
                              "exceeded maximum nesting depth"),       # libyaml's limit: 1000
    "10k nested flow maps": ("prune: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n",
                             f"the spec nests more than {MAX_DEPTH} levels deep"),
    "deep block lists": ("version: 1\nprune:\n" + "".join("  " * i + "- \n" for i in range(1, 200)),
                         f"the spec nests more than {MAX_DEPTH} levels deep"),
    "1M-element index list": ("version: 1\nprune:\n  - layer: fc1\n    remove: ["
                              + ", ".join(map(str, range(1_000_000))) + "]\n",
                              f"more than the {MAX_BYTES} a spec may be"),
    "values over the limit": ("version: 1\nprune:\n  - layer: fc1\n    remove: ["
                              + ",".join(["1"] * (MAX_VALUES + 5)) + "]\n",
                              f"the spec holds more than {MAX_VALUES} values"),
    "latin-1 bytes": (b"version: 1\nprune:\n  - layer: caf\xe9\n", "the spec is not UTF-8 text"),
    "UTF-16": ("version: 1\n".encode("utf-16"), "the spec is not UTF-8 text"),
    "truncated UTF-8": ("version: 1\nprune: [{layer: é".encode()[:-1], "the spec is not UTF-8 text"),
    "NUL byte": (b"version: 1\x00\n", "control characters are not allowed"),
    "5000-digit index": ("version: 1\nprune: [{layer: a, remove: [" + "9" * 5000 + "]}]\n",
                         "integer is too large (5000 characters)"),
    "huge negative": ("version: 1\nprune: [{layer: a, remove: [-99999999999999999999]}]\n",
                      "negative index -99999999999999999999 in 'remove'"),
    "infinite fraction": ("version: 1\nprune: [{layer: a, fraction: .inf}]\n",
                          "'fraction' must be between 0 and 1 (exclusive), got inf"),
    "python object": ("version: 1\nprune: !!python/object/apply:os.system ['true']\n",
                      "unsupported YAML tag '!!python/object/apply:os.system'"),
    "python name": ("version: !!python/name:os.system\nprune: []\n",
                    "unsupported YAML tag '!!python/name:os.system'"),
    "set tag": ("version: 1\nprune: !!set {a, b}\n", "unsupported YAML tag '!!set'"),
    "merge key": ("version: 1\nprune:\n  - &b {layer: a, remove: [1]}\n  - <<: *b\n    remove: [2]\n",
                  "YAML merge keys ('<<') are not supported"),
    "two documents": ("version: 1\n---\nversion: 1\n", "expected a single document in the stream"),
    "1001 rules": ("version: 1\nprune:\n" + "  - {layer: a, remove: [1]}\n" * 1001,
                   "the spec has 1001 rules, more than the 1000 a spec may have"),
    "20k unknown keys": ("version: 1\nprune:\n  - layer: a\n    remove: [1]\n"
                         + "".join(f"    k{i}: 1\n" for i in range(20_000)),
                         "unknown key 'k0'"),
    "20k duplicate keys": ("version: 1\nprune:\n  - layer: a\n    remove: [1]\n" + "    k: 1\n" * 20_000,
                           "duplicate key 'k'"),
    "tab indentation": ("version: 1\nprune:\n\t- layer: a\n", "indent with spaces, not tabs"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_gets_one_located_line_fast(name):
    data, expected = HOSTILE[name]
    result = outcome(data)
    assert isinstance(result, list) and expected in result[0], result[:2]


def test_names_with_line_breaks_still_give_one_line():
    for name in ("\\r", "a\\nb", "\\x85", "\\u2028"):
        result = outcome(f'version: 1\nprune:\n  - {{type: "{name}"}}\n')
        assert isinstance(result, list) and len(result) == 1, result


def test_yaml_tags_never_construct_objects(tmp_path):
    canary = tmp_path / "constructed"
    for payload in (f"!!python/object/apply:os.system ['touch {canary}']",
                    f"!!python/object/apply:builtins.exec [\"open('{canary}', 'w')\"]",
                    f"!!python/object/new:builtins.exec [\"open('{canary}', 'w')\"]"):
        for where in ("version: {}\nprune: []\n", "version: 1\nprune:\n  - layer: {}\n",
                      "version: 1\nprune: [{{layer: a, remove: [{}]}}]\n"):
            result = outcome(where.format(payload))
            assert isinstance(result, list) and "unsupported YAML tag" in " ".join(result)
    assert not canary.exists()


def test_an_error_flood_is_capped_and_counted():
    text = "version: 1\nprune:\n  - layer: a\n    remove: [" + ", ".join(["-1"] * 5000) + "]\n"
    result = outcome(text)
    assert len(result) == MAX_LIST_ERRORS + 1
    assert result[-1] == (f"{PATH}:4:{14 + 4 * MAX_LIST_ERRORS}: rule 1 (layer 'a'): "
                          f"{5000 - MAX_LIST_ERRORS} more problems in 'remove' from here on "
                          "(hint: fix the ones above first)")
    rules = "version: 1\nprune:\n" + "  - {layer: a, remove: [-1]}\n" * 200
    result = outcome(rules)
    assert len(result) == MAX_ERRORS
    assert result[-1] == f"{PATH}: {200 - MAX_ERRORS + 1} more errors not shown (hint: fix the ones above first)"


def test_the_largest_allowed_index_list_parses_fast():
    n = 100_000                              # 0.7 MB of text: under MAX_BYTES and MAX_VALUES
    spec = outcome("version: 1\nprune:\n  - layer: fc1\n    keep: [" + ", ".join(map(str, range(n))) + "]\n")
    assert spec.rules[0].keep == tuple(range(n))
    assert spec.rules[0].location("keep", n - 1).startswith(f"{PATH}:4:")


def test_aliases_that_stay_small_are_plain_sharing():
    spec = outcome("version: 1\nprune:\n  - &r {layer: fc1, remove: [1, 2]}\n  - *r\n  - layer: fc2\n"
                   "    keep: &k [0, 3]\n  - {layer: fc3, keep: *k}\n")
    assert [(r.layer, r.remove, r.keep) for r in spec.rules] == [
        ("fc1", (1, 2), None), ("fc1", (1, 2), None), ("fc2", None, (0, 3)), ("fc3", None, (0, 3))]
    assert spec.rules[1].location("remove", 1) == f"{PATH}:3:33"    # the anchored value's line


def test_an_error_inside_an_alias_points_at_the_anchor():
    result = outcome("version: 1\nprune:\n  - &r {layer: fc1, remove: [-4]}\n  - *r\n")
    assert result == [f"{PATH}:3:30: rule 1 (layer 'fc1'): negative index -4 in 'remove' "
                      "(hint: channel indices start at 0)",
                      f"{PATH}:3:30: rule 2 (layer 'fc1'): negative index -4 in 'remove' "
                      "(hint: channel indices start at 0)"]


@pytest.mark.parametrize("name", ["billion laughs", "latin-1 bytes", "10k nested flow lists"])
def test_cli_validate_prints_one_line_per_error_and_exits_1(name, tmp_path, capsys):
    path = tmp_path / "hostile.yaml"
    data = HOSTILE[name][0]
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    start = time.thread_time()
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert time.thread_time() - start < 1.0
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith(f"error: {path}:") and HOSTILE[name][1] in err
