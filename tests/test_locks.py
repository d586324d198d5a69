"""Lock files: round trip, applying exactly the locked channels, and every way a lock goes stale."""

import json
import os
from pathlib import Path

import jsonschema
import keras
import numpy as np
import pytest

from compiler import api
from compiler.artifacts import artifact_schema, decisions_digest
from compiler.errors import ArtifactError
from compiler.lock import (default_lock_path, format_lock, lock_to_dict, model_fingerprint,
                           read_lock, spec_fingerprint)
from clirun import run

SPEC = "version: 1\nprune:\n  - layer: conv_a\n    remove: [1, 2]\n  - layer: conv_c\n    fraction: 0.5\n"


def signed(data: dict) -> str:
    """A lock edited on purpose, its digest brought up to date (as a forger would)."""
    data["decisions_sha256"] = decisions_digest(data)
    return json.dumps(data)


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "add.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def locked(spec, add_bn_file, capsys):
    """``spec`` with a fresh ``spec.yaml.lock`` next to it."""
    code, out, err = run(capsys, "lock", spec, add_bn_file)
    assert (code, err) == (0, "")
    lock = Path(default_lock_path(str(spec)))
    resolved = api.plan(add_bn_file, spec)
    assert out == (f"wrote {lock}: 2 groups, params {resolved.params[0]} -> {resolved.params[1]} "
                   f"({(resolved.params[1] - resolved.params[0]) / resolved.params[0] * 100:+.1f}%), "
                   f"FLOPs {resolved.flops[0]} -> {resolved.flops[1]} "
                   f"({(resolved.flops[1] - resolved.flops[0]) / resolved.flops[0] * 100:+.1f}%)\n")
    return lock


def test_lock_holds_the_plans_groups_and_round_trips(locked, spec, add_bn_file):
    text = locked.read_text()
    data = json.loads(text)
    jsonschema.Draft202012Validator(artifact_schema("lock")).validate(data)
    resolved = api.plan(add_bn_file, spec)
    assert [(g["group"], [(m["layer"], tuple(m["removed"])) for m in g["members"]])
            for g in data["groups"]] == [(g.number, [m[:2] for m in g.members]) for g in resolved.groups]
    assert data["groups"][0]["coupled_by"] == ["add"]
    assert data["model"]["file"] == os.path.relpath(add_bn_file, locked.parent)
    assert format_lock(read_lock(locked)) == text
    assert '        {"layer": "conv_b", "removed": [1, 2]}' in text.splitlines()


def test_locking_again_leaves_a_current_lock_untouched(locked, spec, add_bn_file, capsys):
    before = locked.stat().st_mtime_ns
    assert run(capsys, "lock", spec, add_bn_file) == (0, f"{locked}: up to date\n", "")
    assert locked.stat().st_mtime_ns == before


def test_apply_locked_equals_apply(locked, spec, add_bn_file, tmp_path, capsys):
    out_locked, out_plain = tmp_path / "locked.keras", tmp_path / "plain.keras"
    code, out, err = run(capsys, "apply", spec, add_bn_file, "-o", out_locked, "--locked")
    assert (code, err) == (0, "") and out.endswith(f", exactly as locked in {locked})\n")
    assert run(capsys, "apply", spec, add_bn_file, "-o", out_plain)[0] == 0
    a, b = keras.saving.load_model(out_locked), keras.saving.load_model(out_plain)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_apply_locked_takes_the_model_from_the_lock(locked, spec, tmp_path, capsys):
    out_path = tmp_path / "out.keras"
    assert run(capsys, "apply", spec, "-o", out_path, "--locked")[0] == 0
    assert keras.saving.load_model(out_path).get_layer("conv_a").filters == 6


def test_apply_locked_removes_the_locked_channels_not_what_a_criterion_picks(
        locked, spec, add_bn_file, tmp_path, capsys):
    data = json.loads(locked.read_text())
    conv_c = data["groups"][1]["members"][0]
    assert conv_c["layer"] == "conv_c"
    chosen = [c for c in range(4) if c not in conv_c["removed"]]   # the criterion's complement
    conv_c["removed"] = chosen
    edited = tmp_path / "edited.lock"
    edited.write_text(signed(data))
    out_path = tmp_path / "out.keras"
    assert run(capsys, "apply", spec, add_bn_file, "-o", out_path, f"--locked={edited}")[0] == 0
    kept = [c for c in range(4) if c not in chosen]
    original = keras.saving.load_model(add_bn_file).get_layer("conv_c").get_weights()[0]
    rebuilt = keras.saving.load_model(out_path).get_layer("conv_c").get_weights()[0]
    # conv_c reads add's 8 channels minus the locked 1 and 2, and keeps the filters not chosen
    np.testing.assert_array_equal(rebuilt, original[:, :, [0, 3, 4, 5, 6, 7], :][..., kept])
    # and --check says the edited lock is not what the spec resolves to
    os.replace(edited, locked)
    code, out, err = run(capsys, "lock", "--check", locked)
    assert code == 1 and out == ""
    assert err == (f"error: {locked}: the lock is not what the spec resolves to on its model now "
                   "(was it edited by hand, or written by another prunec version?) (hint: run "
                   f"'prunec lock {spec}' and review the change with 'prunec diff')\n")


def test_a_comment_or_a_spelled_out_default_keeps_the_lock_current(locked, spec, capsys):
    spec.write_text("# reviewed in PR 12\n" + SPEC.replace("fraction: 0.5", "fraction: 0.50\n    criterion: l1"))
    assert run(capsys, "lock", "--check", spec) == (0, f"{locked}: up to date\n", "")


def test_changed_spec_is_refused_before_the_model_loads(locked, spec, tmp_path, capsys):
    spec.write_text(SPEC.replace("fraction: 0.5", "fraction: 0.25"))
    out_path = tmp_path / "out.keras"
    code, out, err = run(capsys, "apply", spec, tmp_path / "missing.keras", "-o", out_path, "--locked")
    assert (code, out) == (1, "")
    assert err == (f"error: {locked}: the spec '{spec}' changed since this lock was written "
                   f"(hint: review 'prunec plan {spec}', then run 'prunec lock {spec}' again)\n")
    assert not out_path.exists()


def test_changed_weights_are_refused(locked, spec, add_bn_file, tmp_path, capsys):
    model = keras.saving.load_model(add_bn_file)
    kernel = model.get_layer("head").kernel
    kernel.assign(kernel.numpy() * 1.001)
    retrained = tmp_path / "retrained.keras"
    model.save(retrained)
    out_path = tmp_path / "out.keras"
    code, out, err = run(capsys, "apply", spec, retrained, "-o", out_path, "--locked")
    assert (code, out) == (1, "")
    assert err == (f"error: {locked}: the model '{retrained}' is not the locked model: its weights "
                   "changed since this lock was written, so the locked channels were chosen for "
                   f"other weights (hint: review 'prunec plan {spec}', then run 'prunec lock "
                   f"{spec}' again)\n")
    assert not out_path.exists()


def test_changed_architecture_is_refused(locked, spec, add_bn_file, tmp_path, capsys):
    model = keras.saving.load_model(add_bn_file)
    config = model.get_config()
    (bn,) = [layer for layer in config["layers"] if layer["name"] == "bn_a"]
    bn["config"]["epsilon"] = 0.01
    changed = keras.Model.from_config(config)
    changed.set_weights(model.get_weights())
    assert model_fingerprint(changed)[1] == read_lock(locked).weights_sha256   # same weights
    other = tmp_path / "other.keras"
    changed.save(other)
    code, _, err = run(capsys, "plan", spec, other, "--locked")
    assert code == 1
    assert err.startswith(f"error: {locked}: the model '{other}' is not the locked model: its "
                          "architecture changed since this lock was written")


def test_lock_files_that_are_missing_broken_or_of_another_kind(spec, add_bn_file, tmp_path, capsys):
    lock = default_lock_path(str(spec))
    assert run(capsys, "plan", spec, add_bn_file, "--locked")[2] == f"error: {lock}: file not found\n"
    Path(lock).write_text('{"format": "prunec-lock",\n  "version": 1,,}')
    assert run(capsys, "plan", spec, add_bn_file, "--locked")[2] == (
        f"error: {lock}:2:16: not valid JSON: Expecting property name enclosed in double quotes "
        "(hint: such files are written by 'prunec lock')\n")
    Path(lock).write_text('{"format": "prunec-lock", "version": 1, "groups": []}')
    assert run(capsys, "plan", spec, add_bn_file, "--locked")[2] == (
        f"error: {lock}: not a valid lock file: at '(top)': 'spec' is a required property "
        "(hint: was it edited by hand? write it again with 'prunec lock')\n")
    code, plan_json, _ = run(capsys, "plan", spec, add_bn_file, "--format", "json")
    Path(lock).write_text(plan_json)
    assert run(capsys, "plan", spec, add_bn_file, "--locked")[2] == (
        f"error: {lock}: not a prunec lock file (hint: such files are written by 'prunec lock')\n")


def test_a_model_given_as_the_lock_gets_a_hint(spec, add_bn_file, tmp_path, capsys):
    code, _, err = run(capsys, "apply", spec, "--locked", add_bn_file, "-o", tmp_path / "o.keras")
    assert code == 1
    assert err == (f"error: {add_bn_file}: this is a model file, not a lock file (hint: --locked "
                   "takes an optional LOCK: put it after MODEL, or write --locked=LOCK)\n")


def test_check_reports_each_file(locked, spec, add_bn_file, tmp_path, capsys):
    unlocked = tmp_path / "unlocked.yaml"
    unlocked.write_text(SPEC)
    (tmp_path / "elsewhere").mkdir()
    orphan = tmp_path / "elsewhere" / "add.yaml.lock"     # records its spec as 'add.yaml', beside it
    orphan.write_text(locked.read_text())
    code, out, err = run(capsys, "lock", "--check", spec, locked, unlocked, orphan)
    assert code == 1
    assert out == f"{locked}: up to date\n{unlocked}: not locked, skipped\n"
    assert err == (f"error: {orphan}: its spec '{tmp_path / 'elsewhere' / 'add.yaml'}' does not "
                   "exist (hint: delete the lock, or restore the spec (the lock's 'spec.file' is "
                   "relative to the lock's directory))\n")


def test_a_lock_written_elsewhere_checks_against_the_spec_it_records(spec, add_bn_file, tmp_path,
                                                                     capsys):
    (tmp_path / "locks").mkdir()
    lock = tmp_path / "locks" / "renamed.lock"
    assert run(capsys, "lock", spec, add_bn_file, "-o", lock)[0] == 0
    assert json.loads(lock.read_text())["spec"]["file"] == "../add.yaml"
    assert run(capsys, "lock", "--check", lock) == (0, f"{lock}: up to date\n", "")


def test_a_lock_whose_totals_were_edited_is_refused(locked, spec, add_bn_file, tmp_path, capsys):
    data = json.loads(locked.read_text())
    data["totals"]["params"]["after"] -= 10        # the reviewed numbers say more was removed
    locked.write_text(signed(data))
    out_path = tmp_path / "out.keras"
    code, out, err = run(capsys, "apply", spec, add_bn_file, "-o", out_path, "--locked")
    assert (code, out) == (1, "") and not out_path.exists()
    params, flops = data["totals"]["params"], data["totals"]["flops"]
    assert err.startswith(f"error: {locked}: the lock's totals (params {params['before']} -> "
                          f"{params['after']}, FLOPs {flops['before']} -> {flops['after']}) are "
                          "not what its groups remove (params ")
    assert "was it edited by hand?" in err and err.count("\n") == 1


EDITED = ("the lock's channels or totals do not match its 'decisions_sha256': it was edited by "
          "hand (hint: run 'prunec lock SPEC' again to write what the spec resolves to, and "
          "review it with 'prunec diff')")


def test_a_channel_edited_by_hand_with_the_same_count_is_refused(locked, spec, add_bn_file,
                                                                 tmp_path, capsys):
    data = json.loads(locked.read_text())
    conv_c = data["groups"][1]["members"][0]
    conv_c["removed"] = [c for c in range(4) if c not in conv_c["removed"]]   # same count
    locked.write_text(json.dumps(data, indent=2))
    out_path = tmp_path / "out.keras"
    code, out, err = run(capsys, "apply", spec, add_bn_file, "-o", out_path, "--locked")
    assert (code, out, err) == (1, "", f"error: {locked}: {EDITED}\n")
    assert not out_path.exists()
    assert run(capsys, "lock", "--check", locked) == (1, "", f"error: {locked}: {EDITED}\n")
    with pytest.raises(ArtifactError, match="do not match its 'decisions_sha256'"):
        api.plan(add_bn_file, spec, lock=locked)


def test_a_lock_without_a_digest_must_be_written_again(locked, spec, add_bn_file, tmp_path, capsys):
    data = json.loads(locked.read_text())
    del data["decisions_sha256"]                    # as prunec wrote locks before it had one
    locked.write_text(json.dumps(data))
    message = (f"error: {locked}: the lock has no 'decisions_sha256': it was written by an older "
               "prunec, so its channels cannot be checked (hint: run 'prunec lock SPEC' again and "
               "review the change with 'prunec diff')\n")
    out_path = tmp_path / "out.keras"
    assert run(capsys, "apply", spec, add_bn_file, "-o", out_path, "--locked") == (1, "", message)
    assert run(capsys, "lock", "--check", locked) == (1, "", message)
    assert not out_path.exists()


def test_a_lock_that_disagrees_with_an_explicit_rule_is_refused(locked, spec, add_bn_file,
                                                                tmp_path, capsys):
    data = json.loads(locked.read_text())
    for member in data["groups"][0]["members"]:     # rule 1 says conv_a loses [1, 2]
        member["removed"] = [1, 3]
    locked.write_text(signed(data))                  # a forged digest still fails this
    out_path = tmp_path / "out.keras"
    code, out, err = run(capsys, "apply", spec, add_bn_file, "-o", out_path, "--locked")
    assert (code, out) == (1, "") and not out_path.exists()
    assert err == (f"error: {locked}: the lock disagrees with rule 1 (layer 'conv_a') of the spec: "
                   "the rule removes [1-2] of 'conv_a', the lock [1,3] (hint: run 'prunec lock "
                   f"{spec}' again and review the change with 'prunec diff')\n")


def test_spec_fingerprint_ignores_location_but_not_content():
    one = api.parse_spec(SPEC, "a.yaml")
    moved = api.parse_spec("\n\n" + SPEC + "model: elsewhere.keras\n", "dir/b.yaml")
    assert spec_fingerprint(one) == spec_fingerprint(moved)
    assert spec_fingerprint(one) != spec_fingerprint(api.parse_spec(SPEC.replace("[1, 2]", "[2, 1]"), "a.yaml"))


def test_api_lock_round_trip_and_stale_lock(add_bn_file, tmp_path):
    spec = api.parse_spec(SPEC, str(tmp_path / "s.yaml"))
    model = keras.saving.load_model(add_bn_file)
    the_lock = api.lock(spec, model)
    assert the_lock.model_file is None      # an in-memory model has no file
    path = tmp_path / "s.lock"
    api.write_lock(the_lock, path)
    assert read_lock(path) == the_lock
    smaller, resolved, difference = api.apply(spec, model, lock=path)
    assert smaller.get_layer("conv_c").filters == 2 and difference < 1e-4
    assert [g.members for g in resolved.groups] == [g.members for g in the_lock.groups]
    other = api.parse_spec(SPEC.replace("[1, 2]", "[3]"), "s.yaml")
    with pytest.raises(ArtifactError, match="changed since this lock was written"):
        api.plan(model, other, lock=path)


def test_lock_dict_keys_follow_the_schema_order(locked):
    data = lock_to_dict(read_lock(locked))
    schema = artifact_schema("lock")
    assert list(data) == [key for key in schema["properties"] if key != "data"]   # no data criterion
    assert set(schema["properties"]) - set(schema["required"]) == {"data"}


def test_spec_fingerprint_changes_with_the_criterion():
    base = "version: 1\nprune:\n  - layer: conv_c\n    fraction: 0.5\n"
    assert spec_fingerprint(api.parse_spec(base, "a.yaml")) != \
        spec_fingerprint(api.parse_spec(base + "    criterion: l2\n", "a.yaml"))


def test_a_lock_whose_flops_alone_were_edited_is_refused(locked, spec, add_bn_file, tmp_path, capsys):
    data = json.loads(locked.read_text())
    data["totals"]["flops"]["after"] -= 2
    data["decisions_sha256"] = decisions_digest(data)     # re-signed: only the totals check is left
    locked.write_text(json.dumps(data))
    out_path = tmp_path / "out.keras"
    code, out, err = run(capsys, "apply", spec, add_bn_file, "-o", out_path, "--locked")
    assert code == 1 and not out_path.exists() and "the lock's totals" in err
