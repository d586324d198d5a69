"""``prunec diff``: groups added, removed and moved, totals, fingerprints; exit 0, 1 or 2."""

import json
from pathlib import Path

import pytest

import models
from clirun import run

BASE = "  - layer: conv_a\n    remove: [1, 2]\n  - layer: conv_c\n    remove: [0]\n"


def artifact(tmp_path, capsys, add_bn_file, name: str, rules: str, kind: str = "lock") -> Path:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text("version: 1\nprune:\n" + rules)
    out = tmp_path / f"{name}.{'lock' if kind == 'lock' else 'json'}"
    if kind == "lock":
        assert run(capsys, "lock", spec, add_bn_file, "-o", out)[0] == 0
    else:
        assert run(capsys, "plan", spec, add_bn_file, "--format", "json", "-o", out)[0] == 0
    return out


def totals(path: Path) -> dict:
    return json.loads(path.read_text())["totals"]


def test_equal_locks_exit_0(tmp_path, add_bn_file, capsys):
    old = artifact(tmp_path, capsys, add_bn_file, "old", BASE)
    new = artifact(tmp_path, capsys, add_bn_file, "new", "# a comment\n" + BASE)
    assert run(capsys, "diff", old, new) == (0, "no changes\n", "")


def test_moved_added_and_removed_groups(tmp_path, add_bn_file, capsys):
    old = artifact(tmp_path, capsys, add_bn_file, "old", BASE)
    new = artifact(tmp_path, capsys, add_bn_file, "new", "  - layer: conv_a\n    remove: [2, 5, 6]\n")
    a, b = totals(old), totals(new)
    code, out, err = run(capsys, "diff", old, new)
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        f"--- {old} (lock)",
        f"+++ {new} (lock)",
        "spec changed",
        "groups: 0 added, 1 removed, 1 changed, 0 unchanged",
        "~ group conv_a, conv_b (coupled by add)",
        "~   conv_a  removes 2 -> 3  now also [5-6]  no longer [1]",
        "~   conv_b  removes 2 -> 3  now also [5-6]  no longer [1]",
        "- group conv_c",
        "-   conv_c  removed 1  [0]",
        f"params after: {a['params']['after']} -> {b['params']['after']} "
        f"({b['params']['after'] - a['params']['after']:+d})",
        f"FLOPs after: {a['flops']['after']} -> {b['flops']['after']} "
        f"({b['flops']['after'] - a['flops']['after']:+d})",
    ]
    code, out, _ = run(capsys, "diff", new, old)
    assert code == 1 and "+ group conv_c\n+   conv_c  removes 1  [0]\n" in out
    assert "groups: 1 added, 0 removed, 1 changed, 0 unchanged" in out


def test_changed_model_weights_show_in_a_lock_diff(tmp_path, add_bn_file, capsys):
    old = artifact(tmp_path, capsys, add_bn_file, "old", BASE)
    other = tmp_path / "other.keras"
    models.add_bn_model(seed=30).save(other)
    spec = tmp_path / "old.yaml"
    new = tmp_path / "new.lock"
    assert run(capsys, "lock", spec, other, "-o", new)[0] == 0
    code, out, _ = run(capsys, "diff", old, new)
    assert code == 1
    lines = out.splitlines()
    assert "model weights changed" in lines and "spec changed" not in lines
    assert "model architecture changed" not in lines


def test_plans_and_locks_compare_by_their_groups(tmp_path, add_bn_file, capsys):
    lock = artifact(tmp_path, capsys, add_bn_file, "a", BASE)
    plan = artifact(tmp_path, capsys, add_bn_file, "b", BASE, kind="plan")
    assert run(capsys, "diff", plan, lock) == (0, "no changes\n", "")
    other = artifact(tmp_path, capsys, add_bn_file, "c", BASE.replace("[0]", "[3]"), kind="plan")
    code, out, _ = run(capsys, "diff", plan, other)
    assert code == 1 and f"+++ {other} (plan)" in out
    assert "~   conv_c  removes 1 -> 1  now also [3]  no longer [0]" in out.splitlines()


def test_trouble_exits_2(tmp_path, capsys):
    missing = tmp_path / "missing.lock"
    broken = tmp_path / "broken.lock"
    broken.write_text("[]")
    assert run(capsys, "diff", missing, broken) == (2, "", f"error: {missing}: file not found\n")
    code, out, err = run(capsys, "diff", broken, broken)
    assert (code, out) == (2, "")
    assert err == (f"error: {broken}: not a prunec plan or lock file (hint: such files are "
                   "written by 'prunec plan --format json' or 'prunec lock')\n")
    assert run(capsys, "diff", broken)[0] == 2      # usage
    deep = tmp_path / "deep.lock"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert run(capsys, "diff", deep, deep) == (2, "", (
        f"error: {deep}: not a prunec plan or lock: JSON nested too deeply or numbers too long "
        "(hint: such files are written by 'prunec plan --format json' or 'prunec lock')\n"))
