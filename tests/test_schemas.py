"""The shipped JSON Schemas: valid schemas; every checked-in spec under ``specs/`` is valid (the
one test that validates them); the spec schema rejects broken specs; pre-commit hooks run real
commands."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from compiler.api import load_spec
from compiler.artifacts import artifact_schema
from clirun import run

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


@pytest.mark.parametrize("name", ["spec", "plan", "lock"])
def test_prunec_schema_prints_a_valid_json_schema(name, capsys):
    code, out, err = run(capsys, "schema", name)
    assert (code, err) == (0, "")
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == artifact_schema(name)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_checked_in_spec_is_valid(path, capsys, monkeypatch):
    """Every spec under ``specs/``, checked here and only here: its editor comment points at the
    shipped schema (the path is relative to the spec file; a dead link gives no squiggles), the
    schema accepts it, and ``prunec validate`` accepts it, run from the repository root."""
    text = path.read_text(encoding="utf-8")
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", text.splitlines()[0])
    assert match, f"{path.name} lacks the schema comment on its first line"
    assert json.loads((path.parent / match.group(1)).read_text()) == artifact_schema("spec")
    jsonschema.Draft202012Validator(artifact_schema("spec")).validate(yaml.safe_load(text))
    load_spec(path)
    monkeypatch.chdir(ROOT)
    relative = str(path.relative_to(ROOT))
    assert run(capsys, "validate", relative) == (0, f"{relative}: ok\n", "")


def test_schema_defaults_to_the_spec(capsys):
    assert run(capsys, "schema") == run(capsys, "schema", "spec")


def test_plan_and_lock_describe_groups_identically():
    assert artifact_schema("plan")["$defs"]["group"] == artifact_schema("lock")["$defs"]["group"]
    assert artifact_schema("plan")["$defs"]["totals"] == artifact_schema("lock")["$defs"]["totals"]


BROKEN = {
    "no version": {"prune": [{"layer": "fc1", "remove": [1]}]},
    "no rules": {"version": 1, "prune": []},
    "unknown key": {"version": 1, "prune": [{"layer": "fc1", "remvoe": [1]}]},
    "two selectors": {"version": 1, "prune": [{"layer": "fc1", "remove": [1], "keep": [2]}]},
    "no selector": {"version": 1, "prune": [{"layer": "fc1"}]},
    "no layer or type": {"version": 1, "prune": [{"remove": [1]}]},
    "negative index": {"version": 1, "prune": [{"layer": "fc1", "remove": [-1]}]},
    "repeated index": {"version": 1, "prune": [{"layer": "fc1", "remove": [1, 1]}]},
    "fraction of 1": {"version": 1, "prune": [{"layer": "fc1", "fraction": 1}]},
    "criterion with remove": {"version": 1, "prune": [{"layer": "fc1", "remove": [1], "criterion": "l2"}]},
    "unknown criterion": {"version": 1, "prune": [{"layer": "fc1", "count": 2, "criterion": "l3"}]},
    "version 2": {"version": 2, "prune": [{"layer": "fc1", "remove": [1]}]},
    "empty path part": {"version": 1, "prune": [{"layer": "a//b", "remove": [1]}]},
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_spec_schema_rejects_broken_specs(name, tmp_path, capsys):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(BROKEN[name], artifact_schema("spec"))
    path = tmp_path / "broken.yaml"          # and prunec itself refuses them too
    path.write_text(yaml.safe_dump(BROKEN[name]))
    assert run(capsys, "validate", path)[0] == 1


def test_pre_commit_hooks_run_real_commands(tmp_path, capsys, monkeypatch):
    hooks = {hook["id"]: hook for hook in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"prunec-validate", "prunec-lock-check"}
    for hook in hooks.values():
        assert hook["entry"].startswith("prunec ") and hook["language"] == "python"
    spec = tmp_path / "specs" / "s.yaml"
    spec.parent.mkdir()
    spec.write_text("version: 1\nprune:\n  - layer: fc1\n    remove: [1]\n")
    monkeypatch.chdir(tmp_path)
    for hook in hooks.values():                   # what pre-commit runs for a changed spec
        assert re.search(hook["files"], "specs/s.yaml")
        assert run(capsys, *hook["entry"].split()[1:], "specs/s.yaml")[0] == 0
    assert re.search(hooks["prunec-lock-check"]["files"], "specs/s.yaml.lock")
    assert not re.search(hooks["prunec-validate"]["files"], "specs/s.yaml.lock")
