"""The spec stage: every accepted field, and every mistake with its exact message and line:col."""

from __future__ import annotations

import json
import os
import time

import jsonschema
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from compiler import yamlread
from compiler.artifacts import artifact_schema, artifact_schema_text
from compiler.errors import SpecError
from compiler.spec import MAX_DEPTH, MAX_VALUES, SUPPORTED_VERSIONS, Spec, SpecRule, load_spec, parse_spec

LIBYAML = yamlread._BASE_LOADER is not yaml.SafeLoader

FULL = """\
version: 1
model: ../models/mnist_cnn.keras
prune:
  - layer: fc1
    remove: [1, 10, 12]
  - layer: conv2
    keep: [0, 1, 2, 3]
  - layer: "block*_conv1"
    fraction: 0.25
    criterion: l2
  - type: Conv2D
    layer: "backbone/*"
    exclude: ["stem_*"]
    count: 16
    round_to: 8
    min_keep: 8
    optional: true
    exact: false
"""


def errors_of(text: str | bytes, path: str = "s.yaml") -> list[str]:
    """Every reported error as the CLI prints it, in order; fails if the spec is accepted."""
    with pytest.raises(SpecError) as info:
        parse_spec(text, path)
    assert all(isinstance(e, SpecError) for e in info.value.all())
    return [str(e) for e in info.value.all()]


def rule_text(body: str) -> str:
    """A spec whose single rule starts on line 3 with ``- layer: fc1``."""
    lines = "".join(f"    {line}\n" for line in body.splitlines())
    return "version: 1\nprune:\n  - layer: fc1\n" + lines


# --- a valid spec ---------------------------------------------------------------------------------

def test_full_spec_parses_every_field(tmp_path):
    path = tmp_path / "specs" / "mnist.yaml"
    path.parent.mkdir()
    path.write_text(FULL)
    spec = load_spec(path)
    assert isinstance(spec, Spec)
    assert spec.path == str(path)
    assert spec.version == 1
    assert spec.model == str(tmp_path / "models" / "mnist_cnn.keras")
    fc1, conv2, block, typed = spec.rules
    assert fc1 == SpecRule(number=1, where=f"{path}:4:5", layer="fc1", type=None, exclude=(),
                       remove=(1, 10, 12), keep=None, fraction=None, count=None, criterion="l1",
                       round_to=None, min_keep=None, optional=False, exact=True)
    assert conv2.keep == (0, 1, 2, 3) and conv2.remove is None
    assert (block.layer, block.fraction, block.criterion) == ("block*_conv1", 0.25, "l2")
    assert (typed.type, typed.layer, typed.exclude, typed.count) == (
        "Conv2D", "backbone/*", ("stem_*",), 16)
    assert (typed.round_to, typed.min_keep, typed.optional, typed.exact) == (8, 8, True, False)
    assert typed.criterion == "l1"


def test_rule_locations_point_at_values_and_items(tmp_path):
    spec = parse_spec(FULL, "specs/mnist.yaml")
    fc1, _, block, typed = spec.rules
    assert fc1.location("remove") == "specs/mnist.yaml:5:13"
    assert fc1.location("remove", 1) == "specs/mnist.yaml:5:17"
    assert fc1.location("remove", 99) == "specs/mnist.yaml:5:13"  # no such item: the field
    assert fc1.location("fraction") == "specs/mnist.yaml:4:5"  # no such field: the rule
    assert typed.location("exclude", 0) == "specs/mnist.yaml:13:15"
    assert dict(fc1.locations) == {
        "layer": "specs/mnist.yaml:4:12", "remove": "specs/mnist.yaml:5:13",
        "remove[0]": "specs/mnist.yaml:5:14", "remove[1]": "specs/mnist.yaml:5:17",
        "remove[2]": "specs/mnist.yaml:5:21"}
    assert block.location("criterion") == "specs/mnist.yaml:10:16"


def test_labels_name_the_rule():
    fc1, _, block, typed = parse_spec(FULL, "s.yaml").rules
    assert fc1.label() == "rule 1 (layer 'fc1')"
    assert block.label() == "rule 3 (layer 'block*_conv1')"
    assert typed.label() == "rule 4 (layer 'backbone/*', type Conv2D)"
    only_type = parse_spec("version: 1\nprune: [{type: Dense, count: 1}]\n", "s.yaml").rules[0]
    assert only_type.label() == "rule 1 (type Dense)"


def test_rules_are_immutable_and_hashable():
    rule = parse_spec(FULL, "s.yaml").rules[0]
    with pytest.raises(AttributeError):
        rule.layer = "x"
    with pytest.raises(TypeError):
        rule.locations["layer"] = "x"
    assert hash(rule) == hash(parse_spec(FULL, "s.yaml").rules[0])


def test_model_is_relative_to_the_spec_and_optional(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "a.yaml").write_text(FULL)
    assert load_spec("specs/a.yaml").model == os.path.join("models", "mnist_cnn.keras")
    assert parse_spec("version: 1\nmodel: /abs/m.keras\nprune: [{layer: a, count: 1}]",
                      "specs/a.yaml").model == "/abs/m.keras"
    assert parse_spec("version: 1\nprune: [{layer: a, count: 1}]", "a.yaml").model is None


def test_yaml_details_are_accepted():
    text = ("\ufeff# comment\nversion: 1\r\nprune:\r\n  - layer: fc1\r\n"
            "    remove: [+16, 1_000, 0]\r\n")
    assert parse_spec(text.encode("utf-8"), "s.yaml").rules[0].remove == (16, 1000, 0)
    shared = ("version: 1\nprune:\n  - {layer: a, remove: &idx [1, 2]}\n"
              "  - {layer: b, remove: *idx}\n")
    assert [r.remove for r in parse_spec(shared, "s.yaml").rules] == [(1, 2), (1, 2)]
    big = parse_spec(rule_text("count: 123456789012345678901234567890"), "s.yaml")
    assert big.rules[0].count == 123456789012345678901234567890


# --- reading --------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.yaml")
    assert str(info.value) == (f"{tmp_path / 'nope.yaml'}: cannot read spec:"
                               " No such file or directory")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read spec: Is a directory"


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nprune:\n  - layer: caf\xe9\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == (f"{path}:3:15: the spec is not UTF-8 text: byte 0xe9 at offset 32"
                               " (hint: save the file as UTF-8)")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty(text):
    assert errors_of(text) == [
        "s.yaml:1:1: the spec is empty (hint: start with 'version: 1' and a 'prune:' list)"]


def test_top_level_not_a_mapping():
    assert errors_of("- layer: fc1\n") == [
        "s.yaml:1:1: the spec must be a mapping with 'version' and 'prune', got a list"]
    assert errors_of("just words\n") == [
        "s.yaml:1:1: the spec must be a mapping with 'version' and 'prune',"
        " got string 'just words'"]


@pytest.mark.skipif(not LIBYAML, reason="exact YAML problem texts are libyaml's")
@pytest.mark.parametrize("text, expected", [
    ("version: 1\nprune: [1, 2\nfoo: 3\n",
     "s.yaml:3:4: invalid YAML: did not find expected ',' or ']'"
     " (while parsing a flow sequence that starts at line 2, column 8)"),
    ("version: 1\nprune: a: b\n",
     "s.yaml:2:9: invalid YAML: mapping values are not allowed in this context"),
    ("version: 1\n\tprune: []\n",
     "s.yaml:2:1: invalid YAML: found a tab character that violates indentation (while scanning a"
     " plain scalar that starts at line 1, column 10) (hint: indent with spaces, not tabs)"),
    ("version: 1\nprune:\n\t- layer: fc1\n",
     "s.yaml:3:1: invalid YAML: found character that cannot start any token"
     " (hint: indent with spaces, not tabs)"),
    ("version: 1\n---\nversion: 1\n",
     "s.yaml:2:1: invalid YAML: expected a single document in the stream,"
     " but found another document"),
    ("version: 1\nprune: *rules\n", "s.yaml:2:8: invalid YAML: found undefined alias 'rules'"),
    ("version: 1\nmodel: 'a\x07b'\n",
     "s.yaml:2:10: invalid YAML: control characters are not allowed (character 0x07)"),
])
def test_malformed_yaml(text, expected):
    assert errors_of(text) == [expected]


def test_python_tags_are_refused_not_constructed(tmp_path):
    marker = tmp_path / "pwned"
    text = (f"version: 1\nprune:\n  - layer: !!python/object/apply:os.system ['touch {marker}']\n"
            "    remove: !!python/object:collections.OrderedDict {a: 1}\n")
    assert errors_of(text) == [
        "s.yaml:3:12: rule 1: unsupported YAML tag '!!python/object/apply:os.system'"
        " (hint: specs hold plain values only; remove the tag)",
        "s.yaml:4:13: rule 1: unsupported YAML tag '!!python/object:collections.OrderedDict'"
        " (hint: specs hold plain values only; remove the tag)"]
    assert not marker.exists()
    assert errors_of("!!python/object:builtins.dict {version: 1}\n") == [
        "s.yaml:1:1: unsupported YAML tag '!!python/object:builtins.dict'"
        " (hint: specs hold plain values only; remove the tag)"]


def test_alias_bomb_fails_fast():
    lines = ["version: 1", "a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 10):
        refs = ", ".join([f"*{chr(96 + level)}"] * 10)
        lines.append(f"{chr(97 + level)}: &{chr(97 + level)} [{refs}]")
    start = time.perf_counter()
    errors = errors_of("\n".join(lines) + "\n")
    assert time.perf_counter() - start < 1.0
    (error,) = errors                      # located at the alias that crosses the limit
    assert error.startswith("s.yaml:") and error.endswith(
        f": the spec expands to more than {MAX_VALUES} values through YAML"
        " aliases (hint: write the values out instead of nesting aliases)")


def test_self_referencing_alias():
    assert errors_of("version: 1\nprune: &p [*p]\n") == [
        "s.yaml:2:12: a YAML alias refers to a node that contains it"]


@pytest.mark.skipif(not LIBYAML, reason="libyaml's depth limit")
def test_deep_nesting_with_libyaml():
    assert errors_of("version: 1\nprune: " + "[" * 5000 + "]" * 5000) == [
        "s.yaml:2:1007: invalid YAML: exceeded maximum nesting depth"]
    assert errors_of("version: 1\nprune: " + "[" * 500 + "]" * 500) == [
        f"s.yaml:2:{7 + MAX_DEPTH}: the spec nests more than {MAX_DEPTH} levels deep"
        " (hint: a spec nests 4 levels: prune -> rule -> remove -> index)"]


def test_deep_nesting_with_the_pure_python_parser(monkeypatch):
    monkeypatch.setattr(yamlread, "_BASE_LOADER", yaml.SafeLoader)
    assert errors_of("version: 1\nprune: " + "[" * 5000 + "]" * 5000) == [
        f"s.yaml:2:{7 + MAX_DEPTH}: the spec nests more than {MAX_DEPTH} levels deep"
        " (hint: a spec nests 4 levels: prune -> rule -> remove -> index)"]
    assert parse_spec(FULL, "s.yaml") == parse_spec(FULL.encode(), "s.yaml")
    assert errors_of("version: 1\nmodel: 'é\x07b'\n") == [
        "s.yaml:2:10: invalid YAML: special characters are not allowed (character 0x07)"]


def test_100k_indices_load_fast():
    text = rule_text("remove: [" + ", ".join(map(str, range(100_000))) + "]")
    start = time.thread_time()                # CPU time: a loaded machine does not fail it
    rule = parse_spec(text, "s.yaml").rules[0]
    assert time.thread_time() - start < 3.0   # ~0.4 s on an idle core; catches quadratic slips
    assert rule.remove == tuple(range(100_000))
    column = len("    remove: [" + ", ".join(map(str, range(99_999))) + ", ") + 1
    assert rule.location("remove", 99_999) == f"s.yaml:4:{column}"
    assert len(rule.locations) == 100_002


def test_octal_hex_binary_and_base60_numbers_are_refused_where_they_are():
    # YAML 1.1 reads these as 8, 16, 80: a spec would silently remove other channels
    assert errors_of(rule_text("remove: [010, 0x10, 1:20]\nmin_keep: 0b11")) == [
        "s.yaml:4:14: rule 1 (layer 'fc1'): '010' is an octal number in YAML 1.1, which reads it "
        "as 8 (hint: write 10 without the leading zero (or 8 if you meant octal); quote it if it "
        "is a name)",
        "s.yaml:4:19: rule 1 (layer 'fc1'): '0x10' is a hexadecimal number in YAML 1.1, which "
        "reads it as 16 (hint: write it in decimal (16); quote it if it is a name)",
        "s.yaml:4:25: rule 1 (layer 'fc1'): '1:20' is a base-60 (sexagesimal) number in YAML 1.1, "
        "which reads it as 80 (hint: write it in decimal (80); quote it if it is a name)",
        "s.yaml:5:15: rule 1 (layer 'fc1'): '0b11' is a binary number in YAML 1.1, which reads it "
        "as 3 (hint: write it in decimal (3); quote it if it is a name)"]
    assert errors_of(rule_text("count: 1:00")) == [
        "s.yaml:4:12: rule 1 (layer 'fc1'): '1:00' is a base-60 (sexagesimal) number in YAML 1.1, "
        "which reads it as 60 (hint: write it in decimal (60); quote it if it is a name)"]
    quoted = parse_spec("version: 1\nprune:\n  - {layer: '010', remove: [0, 7]}\n", "s.yaml")
    assert quoted.rules[0].layer == "010"


def test_huge_integer():
    assert errors_of(rule_text("count: " + "9" * 5000)) == [
        "s.yaml:4:12: rule 1 (layer 'fc1'): integer is too large (5000 characters)"]


# --- structure ------------------------------------------------------------------------------------

def test_unsupported_version():
    assert errors_of("version: 2\nprune: whatever\n") == [
        "s.yaml:1:10: unsupported spec version 2 (hint: supported versions: 1)"]
    assert SUPPORTED_VERSIONS == (1,)


def test_missing_required_keys():
    assert errors_of("# x\nmodel: m.keras\n") == [
        "s.yaml:2:1: missing required key 'version' (hint: add 'version: 1')",
        "s.yaml:2:1: missing required key 'prune' (hint: add a 'prune:' list of rules)"]


def test_unknown_keys_with_hints():
    assert errors_of("version: 1\nprunes: []\nprune:\n  - layer: fc1\n    remov: [1]\n"
                     "    colour: red\n") == [
        "s.yaml:2:1: unknown key 'prunes' (hint: did you mean 'prune'?)",
        "s.yaml:5:5: rule 1 (layer 'fc1'): unknown key 'remov' (hint: did you mean 'remove'?)",
        "s.yaml:6:5: rule 1 (layer 'fc1'): unknown key 'colour' (hint: valid keys: layer, type,"
        " exclude, unit, remove, keep, fraction, count, criterion, round_to, min_keep, optional, exact)"]


def test_duplicate_keys():
    assert errors_of(rule_text("remove: [1]\nremove: [2]")) == [
        "s.yaml:5:5: rule 1 (layer 'fc1'): duplicate key 'remove'"
        " (hint: first given at line 4, column 5)"]


def test_merge_keys_are_refused():
    assert errors_of(rule_text("remove: [1]\n<<: {count: 2}")) == [
        "s.yaml:5:5: rule 1 (layer 'fc1'): YAML merge keys ('<<') are not supported"
        " (hint: write the keys out)"]


def test_wrong_types():
    text = """\
version: "1"
model: 2024-01-01
prune:
  - layer: 5
    count: 2.0
    exclude: stem_*
    optional: "yes"
  - fc1
"""
    assert errors_of(text) == [
        "s.yaml:1:10: 'version' must be an integer, got string '1'",
        "s.yaml:2:8: 'model' must be a string, got date 2024-01-01 (hint: put the value in quotes)",
        "s.yaml:4:12: rule 1: 'layer' must be a string, got integer 5"
        " (hint: put the value in quotes)",
        "s.yaml:5:12: rule 1: 'count' must be an integer, got number 2.0",
        "s.yaml:6:14: rule 1: 'exclude' must be a list, got string 'stem_*' (hint: write a list,"
        ' e.g. ["stem_*"])',
        "s.yaml:7:15: rule 1: 'optional' must be true or false, got string 'yes'",
        "s.yaml:8:5: rule 2: must be a mapping such as {layer: fc1, remove: [0]}, got string 'fc1'"]


def test_a_quoted_index_list_is_hinted_as_a_list_of_numbers():
    assert errors_of("version: 1\nprune:\n  - layer: fc1\n    remove: \"1, 2\"\n") == [
        "s.yaml:4:13: rule 1 (layer 'fc1'): 'remove' must be a list, got string '1, 2' (hint: "
        "write a list, e.g. [1, 2])"]


def test_prune_must_be_a_non_empty_list():
    assert errors_of("version: 1\nprune: []\n") == [
        "s.yaml:2:8: 'prune' must list at least one rule"]
    assert errors_of("version: 1\nprune:\n") == [
        "s.yaml:2:7: 'prune' must be a list of rules, got null"]


@pytest.mark.parametrize("index, expected", [
    ("-1", "s.yaml:4:17: rule 1 (layer 'fc1'): negative index -1 in 'remove'"
           " (hint: channel indices start at 0)"),
    ("true", "s.yaml:4:17: rule 1 (layer 'fc1'): 'remove[1]' must be an integer, got boolean true"),
    ("1.0", "s.yaml:4:17: rule 1 (layer 'fc1'): 'remove[1]' must be an integer, got number 1.0"),
    ("'2'", "s.yaml:4:17: rule 1 (layer 'fc1'): 'remove[1]' must be an integer, got string '2'"),
    ("[2]", "s.yaml:4:17: rule 1 (layer 'fc1'): 'remove[1]' must be an integer, got a list"),
])
def test_bad_index(index, expected):
    assert errors_of(rule_text(f"remove: [0, {index}, 3]")) == [expected]


def test_duplicate_index_names_the_first():
    assert errors_of(rule_text("keep:\n  - 1\n  - 10\n  - 10\n  - 1")) == [
        "s.yaml:7:9: rule 1 (layer 'fc1'): duplicate index 10 in 'keep'"
        " (hint: first given at line 6, column 9)",
        "s.yaml:8:9: rule 1 (layer 'fc1'): duplicate index 1 in 'keep'"
        " (hint: first given at line 5, column 9)"]


def test_empty_index_list():
    assert errors_of(rule_text("remove: []")) == [
        "s.yaml:4:13: rule 1 (layer 'fc1'): 'remove' must not be empty"]


def test_exactly_one_of():
    assert errors_of(rule_text("remove: [1]\nkeep: [2]")) == [
        "s.yaml:5:5: rule 1 (layer 'fc1'): give exactly one of remove, keep, fraction, count"
        " (found: remove, keep)"]
    assert errors_of(rule_text("optional: true")) == [
        "s.yaml:3:5: rule 1 (layer 'fc1'): give exactly one of remove, keep, fraction, count"
        " (found: none) (hint: or set a 'target:' for the whole spec and leave the amount to it)"]


def test_layer_or_type_is_required():
    assert errors_of("version: 1\nprune:\n  - count: 3\n") == [
        "s.yaml:3:5: rule 1: give 'layer' or 'type' to choose the layers to prune"]


def test_a_typo_is_reported_once():
    """'layr' and 'fractoin' are unknown keys; 'no layer' and 'found: none' would be noise."""
    assert errors_of("version: 1\nprune:\n  - layr: fc1\n    fractoin: 0.5\n") == [
        "s.yaml:3:5: rule 1: unknown key 'layr' (hint: did you mean 'layer'?)",
        "s.yaml:4:5: rule 1: unknown key 'fractoin' (hint: did you mean 'fraction'?)"]


def test_criterion_misuse():
    assert errors_of(rule_text("remove: [1]\ncriterion: l2")) == [
        "s.yaml:5:5: rule 1 (layer 'fc1'): 'criterion' applies only to 'fraction' and 'count',"
        " not to 'remove' (hint: remove 'criterion')"]
    assert errors_of(rule_text("count: 2\ncriterion: L1")) == [
        "s.yaml:5:16: rule 1 (layer 'fc1'): unknown criterion 'L1' (hint: valid values: l1, l2, bn_scale, activation, apoz, taylor)"]


@pytest.mark.parametrize("value, shown", [
    ("0", "0"), ("1", "1"), ("1.5", "1.5"), ("-0.1", "-0.1"), (".nan", "nan"), (".inf", "inf")])
def test_fraction_out_of_range(value, shown):
    assert errors_of(rule_text(f"fraction: {value}")) == [
        "s.yaml:4:15: rule 1 (layer 'fc1'): 'fraction' must be between 0 and 1 (exclusive),"
        f" got {shown}"]


def test_small_numbers_and_names():
    assert errors_of(rule_text("count: 0\nround_to: 0\nmin_keep: -3")) == [
        "s.yaml:4:12: rule 1 (layer 'fc1'): 'count' must be at least 1, got 0",
        "s.yaml:5:15: rule 1 (layer 'fc1'): 'round_to' must be at least 1, got 0",
        "s.yaml:6:15: rule 1 (layer 'fc1'): 'min_keep' must be at least 1, got -3"]
    assert errors_of("version: 1\nprune:\n  - layer: ''\n    type: Dense\n    count: 1\n"
                     "  - layer: backbone//conv\n    count: 1\n") == [
        "s.yaml:3:12: rule 1 (type Dense): 'layer' must not be empty",
        "s.yaml:6:12: rule 2 (layer 'backbone//conv'): 'layer' has an empty part between '/' in"
        " 'backbone//conv' (hint: nested layers are written 'outer/inner', e.g. 'backbone/conv2')"]


def test_all_errors_together_in_file_order():
    text = """\
version: 1
prune:
  - layer: fc1
    remove: [1, 10, 10]
    keep: [3]
  - layer: fc2
    fraction: 2
    criterion: l3
  - type: Dense
    remov: [1]
colour: blue
"""
    with pytest.raises(SpecError) as info:
        parse_spec(text, "s.yaml")
    assert [str(e) for e in info.value.all()] == [
        "s.yaml:4:21: rule 1 (layer 'fc1'): duplicate index 10 in 'remove'"
        " (hint: first given at line 4, column 17)",
        "s.yaml:5:5: rule 1 (layer 'fc1'): give exactly one of remove, keep, fraction, count"
        " (found: remove, keep)",
        "s.yaml:7:15: rule 2 (layer 'fc2'): 'fraction' must be between 0 and 1 (exclusive), got 2",
        "s.yaml:8:16: rule 2 (layer 'fc2'): unknown criterion 'l3' (hint: valid values: l1, l2, bn_scale, activation, apoz, taylor)",
        "s.yaml:10:5: rule 3 (type Dense): unknown key 'remov' (hint: did you mean 'remove'?)",
        "s.yaml:11:1: unknown key 'colour' (hint: valid keys: version, model, data, loss, target, finetune, prune)"]
    first = info.value
    assert (first.where, first.hint) == ("s.yaml:4:21", "first given at line 4, column 17")
    assert first.message == "rule 1 (layer 'fc1'): duplicate index 10 in 'remove'"
    assert len(first.others) == 5


# --- the schema -----------------------------------------------------------------------------------

def test_schema_is_valid_and_documented():
    schema = artifact_schema("spec")
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://prunec.dev/schemas/spec-v1.json"
    assert schema["title"]
    undocumented = [name for props in (schema["properties"], schema["$defs"]["rule"]["properties"])
                    for name, sub in props.items() if not sub.get("description")]
    assert undocumented == []
    assert json.loads(artifact_schema_text("spec")) == schema
    schema["title"] = "changed"
    assert artifact_schema("spec")["title"] != "changed"


def test_the_full_spec_passes_the_published_schema():
    jsonschema.Draft202012Validator(artifact_schema("spec")).validate(yaml.safe_load(FULL))


_ANY = st.one_of(st.none(), st.booleans(), st.integers(-2, 4),
                 st.sampled_from([0.0, 0.5, 1.0, 2.5]),
                 st.sampled_from(["", "fc1", "a//b", "l1", "l2", "Conv2D"]),
                 st.lists(st.integers(-1, 4), max_size=3),
                 st.lists(st.sampled_from(["a", ""]), max_size=2))
_RULE_KEYS = ["layer", "type", "exclude", "remove", "keep", "fraction", "count", "criterion",
              "round_to", "min_keep", "exact", "colour"]


@st.composite
def rules(draw) -> dict:
    """A valid rule, then sometimes one key set to any value and one key dropped."""
    rule = dict(draw(st.sampled_from(
        [{"layer": "fc1"}, {"type": "Dense"}, {"layer": "b/*", "type": "Dense"}])))
    kind = draw(st.sampled_from(["remove", "keep", "fraction", "count"]))
    rule[kind] = draw({"remove": st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True),
                       "keep": st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True),
                       "fraction": st.sampled_from([0.1, 0.5]), "count": st.integers(1, 3)}[kind])
    rule.update(draw(st.fixed_dictionaries({}, optional={
        "criterion": st.sampled_from(["l1", "l2"]), "round_to": st.integers(1, 8),
        "exclude": st.lists(st.sampled_from(["stem_*", "x"]), max_size=2),
        "optional": st.booleans()})))
    if draw(st.booleans()):
        rule[draw(st.sampled_from(_RULE_KEYS))] = draw(_ANY)
    if draw(st.integers(0, 3)) == 0:
        rule.pop(draw(st.sampled_from(sorted(rule))))
    return rule


@settings(max_examples=400, deadline=None)
@given(st.lists(rules(), min_size=1, max_size=3), st.sampled_from([1, 1, 1, 2, "1", None]))
def test_parse_spec_agrees_with_the_published_schema(rules, version):
    """The Python checks and the schema editors see are one contract (integers exclude 1.0)."""
    doc = {"prune": rules} if version is None else {"version": version, "prune": rules}
    strict = jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
            "integer", lambda _, v: type(v) is int))
    schema_ok = strict(artifact_schema("spec")).is_valid(doc)
    try:
        parse_spec(yaml.safe_dump(doc), "s.yaml")
        ours_ok = True
    except SpecError:
        ours_ok = False
    assert ours_ok == schema_ok


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200),
                 st.text(alphabet="version:1prune-[]{}&*!, \n\t'\"#layerremove0", max_size=200)))
def test_no_input_escapes_as_anything_but_a_spec_error(text):
    try:
        parse_spec(text, "s.yaml")
    except SpecError as error:
        assert str(error).startswith("s.yaml")
        assert "\n" not in str(error)
