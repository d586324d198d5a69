"""The ``prunec`` command line: exact messages, exit codes, and nothing written on failure."""

import json
from pathlib import Path

import keras
import pytest

import models
import reference
from clirun import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "mnist.keras"
    models.mnist_cnn().save(path)
    return path


def write_spec(tmp_path, body: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text("version: 1\nprune:\n" + body)
    return path


def test_validate_ok(tmp_path, capsys):
    spec = write_spec(tmp_path, "  - layer: fc1\n    remove: [1]\n")
    assert run(capsys, "validate", spec) == (0, f"{spec}: ok\n", "")


def test_validate_reports_every_error_with_its_line(tmp_path, capsys):
    spec = write_spec(tmp_path, "  - layer: fc1\n    remvoe: [1]\n  - layer: fc2\n    remove: [-1]\n")
    code, out, err = run(capsys, "validate", spec)
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"error: {spec}:") for line in lines)
    assert "did you mean 'remove'?" in lines[0]


def test_plan_is_byte_identical_between_runs(tmp_path, mnist_file, capsys):
    spec = write_spec(tmp_path, "  - layer: conv2\n    fraction: 0.25\n  - layer: fc1\n    remove: [3, 4]\n")
    first = run(capsys, "plan", spec, mnist_file)
    second = run(capsys, "plan", spec, mnist_file)
    assert first == second and first[0] == 0
    assert "fc1      Dense         (None, 512) -> (None, 510)" in first[1]


def test_plan_json_is_valid_json_with_totals(tmp_path, mnist_file, capsys):
    spec = write_spec(tmp_path, "  - layer: fc1\n    remove: [3, 4]\n")
    code, out, _ = run(capsys, "plan", spec, mnist_file, "--format", "json")
    data = json.loads(out)
    assert code == 0
    assert data["groups"] == [{"group": 1, "rules": [1], "coupled_by": [], "approximate": False,
                               "members": [{"layer": "fc1", "removed": [3, 4]}]}]
    assert data["totals"]["params"]["before"] - data["totals"]["params"]["after"] == 2 * 3137 + 2 * 10


def test_apply_writes_a_standard_keras_model(tmp_path, mnist_file, capsys):
    spec = write_spec(tmp_path, "  - layer: fc1\n    remove: [0, 1, 2]\n")
    out_path = tmp_path / "small.keras"
    code, out, err = run(capsys, "apply", spec, mnist_file, "-o", out_path)
    assert (code, err) == (0, "")
    assert out.startswith(f"wrote {out_path}: params 1663370 -> ")
    assert "slice mode, verified" in out
    loaded = keras.saving.load_model(out_path)       # no custom objects
    assert loaded.get_layer("fc1").units == 509
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_apply_mask_mode_keeps_shapes(tmp_path, mnist_file, capsys):
    spec = write_spec(tmp_path, "  - layer: fc1\n    remove: [0, 1, 2]\n")
    out_path = tmp_path / "masked.keras"
    code, out, _ = run(capsys, "apply", spec, mnist_file, "-o", out_path, "--mode", "mask")
    assert code == 0
    masked = keras.saving.load_model(out_path)
    params = masked.count_params()                 # the file keeps every parameter; 3 units zeroed
    fc1_units = 3 * (3136 + 1) + 3 * 10             # fc1's kernel columns and biases, fc2's rows
    assert out.startswith(f"wrote {out_path}: params {params} ({fc1_units} zeroed; "
                          f"{params - fc1_units} once sliced), FLOPs ")
    assert masked.get_layer("fc1").units == 512
    assert not masked.get_layer("fc2").get_weights()[0][[0, 1, 2]].any()


def test_model_from_spec_relative_to_the_spec_file(tmp_path, mnist_file, capsys, monkeypatch):
    spec = tmp_path / "specs" / "s.yaml"
    spec.parent.mkdir()
    spec.write_text(f"version: 1\nmodel: ../{mnist_file.parent.name}/mnist.keras\nprune:\n"
                    "  - layer: fc1\n    remove: [1]\n")
    (tmp_path / mnist_file.parent.name).mkdir(exist_ok=True)
    (tmp_path / mnist_file.parent.name / "mnist.keras").write_bytes(mnist_file.read_bytes())
    monkeypatch.chdir(ROOT)
    assert run(capsys, "plan", spec)[0] == 0


def test_failure_writes_nothing_and_keeps_existing_output(tmp_path, mnist_file, capsys):
    spec = write_spec(tmp_path, "  - layer: fc1\n    remove: [999]\n")
    fresh = tmp_path / "fresh.keras"
    code, out, err = run(capsys, "apply", spec, mnist_file, "-o", fresh)
    assert code == 1 and out == ""
    assert err == (f"error: {spec}:4:14: rule 1 (layer 'fc1'): index 999 is out of range for 'fc1' "
                   "(Dense, 512 channels) (hint: valid range 0..511)\n")
    assert not fresh.exists()
    existing = tmp_path / "existing.keras"
    existing.write_bytes(b"old")
    assert run(capsys, "apply", spec, mnist_file, "-o", existing)[0] == 1
    assert existing.read_bytes() == b"old"


def test_input_model_is_never_overwritten(tmp_path, mnist_file, capsys):
    spec = write_spec(tmp_path, "  - layer: fc1\n    remove: [1]\n")
    before = mnist_file.read_bytes()
    code, _, err = run(capsys, "apply", spec, mnist_file, "-o", mnist_file)
    assert code == 1
    assert err == f"error: {mnist_file}: refusing to overwrite the input model (hint: choose another output path with -o)\n"
    assert mnist_file.read_bytes() == before


def test_missing_model_file(tmp_path, capsys):
    spec = write_spec(tmp_path, "  - layer: fc1\n    remove: [1]\n")
    missing = tmp_path / "nope.keras"
    code, _, err = run(capsys, "plan", spec, missing)
    assert code == 1
    assert err == f"error: {missing}: model file not found (hint: check the path, or the spec's 'model:' key)\n"


def test_a_missing_model_named_by_the_spec_points_at_its_model_key(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nmodel: models/nope.keras\nprune:\n  - layer: fc1\n    remove: [1]\n")
    code, _, err = run(capsys, "plan", spec)
    assert (code, err) == (1, f"error: {spec}:2:8: the spec's model '{tmp_path / 'models/nope.keras'}' "
                              "does not exist (hint: 'model:' is relative to the spec's directory; "
                              "or pass MODEL on the command line)\n")


def test_no_model_anywhere(tmp_path, capsys):
    spec = write_spec(tmp_path, "  - layer: fc1\n    remove: [1]\n")
    code, _, err = run(capsys, "plan", spec)
    assert code == 1
    assert err == f"error: {spec}: no model given (hint: pass MODEL on the command line or add 'model:' to the spec)\n"


def test_constraint_errors_are_one_line(tmp_path, mnist_file, capsys):
    spec = write_spec(tmp_path, "  - layer: fc2\n    remove: [0]\n")
    code, _, err = run(capsys, "plan", spec, mnist_file)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "it reaches model output 'fc2'" in err


def test_usage_error_exit_code(capsys):
    assert run(capsys, "apply")[0] == 2


def test_schema_prints_json_schema(capsys):
    code, out, _ = run(capsys, "schema")
    assert code == 0 and json.loads(out)["$schema"].startswith("https://json-schema.org/")


def test_lambda_model_refused_in_safe_mode_and_trusted_on_request(tmp_path, capsys):
    path = tmp_path / "lam.keras"
    models.lambda_elsewhere_model().save(path)
    spec = write_spec(tmp_path, "  - layer: fc1\n    remove: [1]\n")
    code, _, err = run(capsys, "plan", spec, path)
    assert code == 1 and "--trust-model-code" in err and "serialized Python code" in err
    out_path = tmp_path / "out.keras"
    assert run(capsys, "apply", spec, path, "-o", out_path, "--trust-model-code")[0] == 0
    rebuilt = keras.saving.load_model(out_path, safe_mode=False)
    assert rebuilt.get_layer("fc1").units == 7
    original = keras.saving.load_model(path, safe_mode=False)
    oracle = reference.zeroed_reads_model(original, {"head": [1]})
    reference.assert_outputs_close(oracle, rebuilt, reference.random_inputs(original))


def test_unreadable_model_file_is_one_line(tmp_path, capsys):
    spec = write_spec(tmp_path, "  - layer: fc1\n    remove: [1]\n")
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"this is not a zip archive")
    code, out, err = run(capsys, "plan", spec, garbage)
    assert code == 1 and out == ""
    assert err == (f"error: {garbage}: not a valid .keras archive: not a zip file (truncated, or "
                   "another kind of file) (hint: is the file complete? save the model again with "
                   "model.save('NAME.keras'))\n")
    code, _, err = run(capsys, "plan", spec, tmp_path)
    assert (code, err) == (1, f"error: {tmp_path}: model file is not a readable file\n")


@pytest.mark.parametrize("command", [["plan"], ["lock", "-o", "{lock}"], ["lock", "--check", "{lock}"],
                                     ["apply", "-o", "{out}", "--locked={lock}"]])
def test_no_tensorflow_banner_reaches_stderr(command, tmp_path, mnist_file, capsys):
    """Each command imports TensorFlow quietly, whatever it imports first (one process each)."""
    import os
    import subprocess
    import sys
    spec = write_spec(tmp_path, "  - layer: fc1\n    remove: [1]\n")
    paths = {"lock": tmp_path / "s.lock", "out": tmp_path / "out.keras"}
    assert run(capsys, "lock", spec, mnist_file, "-o", paths["lock"])[0] == 0
    argv = [command[0], str(spec), str(mnist_file), *(a.format(**paths) for a in command[1:])]
    if command[:2] == ["lock", "--check"]:
        argv = ["lock", "--check", str(paths["lock"])]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "compiler.cli", *argv], capture_output=True,
                          text=True, env=dict(env, PYTHONPATH=str(ROOT)), cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
