"""--data on the command line: every mismatch is one line naming the array; locks need no data."""

import json

import keras
import numpy as np
import pytest
from keras import layers

from clirun import run


@pytest.fixture
def model_file(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), name="features")
    h = layers.Dense(8, activation="relu", name="fc1")(inputs)
    out = layers.Dense(3, activation="softmax", name="out")(h)
    model = keras.Model(inputs, out)
    path = tmp_path / "m.keras"
    model.save(path)
    return path


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nprune:\n  - layer: fc1\n    count: 3\n    criterion: activation\n")
    return path


def save(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays) if name.endswith(".npz") else np.save(path, arrays["x"])
    return path


X = np.random.default_rng(0).normal(size=(40, 6)).astype("float32")


@pytest.mark.parametrize("arrays, message", [
    ({"inputs": X}, "no array for model input 'features' (hint: expected arrays 'x' or "
                    "'features' (and optional 'y'); found 'inputs')"),
    ({"x": X[:, :5]}, "array 'x' has shape (40, 5), but model input 'features' expects (N, 6) "
                      "(hint: reshape it to the model's input shape)"),
    ({"x": X.astype(str)}, "array 'x' has dtype <U"),
    ({"x": X, "y": np.zeros(39)}, "arrays have different numbers of samples: 'x' 40, 'y' 39"),
])
def test_data_that_does_not_fit_is_one_line(arrays, message, tmp_path, model_file, spec_file, capsys):
    data = save(tmp_path, **arrays)
    code, out, err = run(capsys, "plan", spec_file, model_file, "--data", data)
    assert code == 1 and out == ""
    assert err.startswith(f"error: {data}: {message}") and err.count("\n") == 1


def test_missing_data_says_to_pass_data(model_file, spec_file, capsys):
    code, _, err = run(capsys, "plan", spec_file, model_file)
    assert (code, err) == (1, f"error: {spec_file}:5:16: rule 1 (layer 'fc1'): criterion "
                              "'activation' needs data (hint: pass --data FILE.npz (or add 'data:' "
                              "to the spec; data= in the Python API))\n")
    code, _, err = run(capsys, "plan", spec_file, model_file, "--data", spec_file.parent / "nope.npz")
    assert code == 1 and "nope.npz: data file not found" in err


def test_npy_npz_and_spec_data_give_the_same_plan_and_lock_pins_it(tmp_path, model_file, spec_file, capsys):
    npz, npy = save(tmp_path, x=X), save(tmp_path, "d.npy", x=X)
    plans = [run(capsys, "plan", spec_file, model_file, "--data", d, "--format", "json")[1]
             for d in (npz, npy)]
    assert plans[0] == plans[1]
    w, b = (v.numpy() for v in keras.saving.load_model(model_file).get_layer("fc1").weights)
    lowest = np.argsort(np.abs(np.maximum(X @ w + b, 0)).mean(0), kind="stable")[:3]
    removed = json.loads(plans[0])["groups"][0]["members"][0]["removed"]
    assert removed == sorted(lowest.tolist())
    with_data = tmp_path / "with_data.yaml"
    with_data.write_text("version: 1\ndata: d.npz\n" + spec_file.read_text().split("\n", 1)[1])
    again = json.loads(run(capsys, "plan", with_data, model_file, "--format", "json")[1])
    assert again["groups"] == json.loads(plans[0])["groups"]
    code, out, err = run(capsys, "lock", with_data, model_file)
    assert code == 0, err
    npz.unlink()                                     # the lock pins the channels: no data needed
    code, out, err = run(capsys, "apply", with_data, model_file, "-o", tmp_path / "o.keras", "--locked")
    assert code == 0, err
    assert keras.saving.load_model(tmp_path / "o.keras").get_layer("fc1").units == 5


def test_batch_size_does_not_change_the_plan(tmp_path, model_file, spec_file, capsys):
    data = save(tmp_path, x=X)
    a = run(capsys, "plan", spec_file, model_file, "--data", data, "--batch-size", "1")[1]
    b = run(capsys, "plan", spec_file, model_file, "--data", data, "--batch-size", "64")[1]
    assert a == b
    code, _, err = run(capsys, "plan", spec_file, model_file, "--data", data, "--batch-size", "0")
    assert code == 2 and "--batch-size N needs N >= 1" in err


def test_a_lock_records_its_data_and_check_re_ranks_on_it(tmp_path, model_file, spec_file, capsys):
    data = save(tmp_path, x=X)
    assert run(capsys, "lock", spec_file, model_file, "--data", data)[0] == 0
    locked = tmp_path / "s.yaml.lock"
    content = json.loads(locked.read_text())
    fingerprint = content["data"]["sha256"]
    assert content["data"] == {"file": "d.npz", "sha256": fingerprint}
    assert list(content)[list(content).index("model") + 1] == "data"      # the schema's order
    # --check finds the data the lock records, without --data
    assert run(capsys, "lock", "--check", locked) == (0, f"{locked}: up to date\n", "")
    # other data: refused, saying which data the channels were ranked on
    other = save(tmp_path, "other.npz", x=X[::-1].copy())
    code, out, err = run(capsys, "lock", "--check", locked, "--data", other)
    assert (code, out) == (1, "")
    assert err == (f"error: {locked}: the data '{other}' is not the data its channels were ranked "
                   f"on (sha256 {fingerprint[:16]}...) (hint: pass the locked data with --data, or "
                   f"run 'prunec lock {spec_file}' on the new data and review the change with "
                   "'prunec diff')\n")
    # a lock without a data criterion records no data
    plain = tmp_path / "plain.yaml"
    plain.write_text("version: 1\nprune:\n  - layer: fc1\n    count: 3\n")
    assert run(capsys, "lock", plain, model_file)[0] == 0
    assert "data" not in json.loads((tmp_path / "plain.yaml.lock").read_text())
