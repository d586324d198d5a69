"""evaluate, apply --finetune and sensitivity: numbers checked against numpy on the data."""

import json

import keras
import numpy as np
import pytest
from keras import layers

from clirun import run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("acc")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")
    inputs = keras.Input((6,))
    h = layers.Dense(16, activation="relu", name="fc1")(inputs)
    h = layers.Dense(12, activation="relu", name="fc2")(h)
    out = layers.Dense(3, activation="softmax", name="out")(h)
    model = keras.Model(inputs, out)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")])
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    model.save(tmp / "m.keras")
    np.savez(tmp / "d.npz", x=x, y=y)
    np.savez(tmp / "nolabels.npz", x=x)
    return tmp, x, y


def expected_metrics(model, x, y):
    p = np.asarray(model(x), dtype=np.float64)
    return (float(np.mean(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1)))),
            float(np.mean(p.argmax(1) == y)),
            float(np.mean([label in np.argsort(row)[-2:] for row, label in zip(p, y)])))


def test_evaluate_reports_loss_accuracy_and_compiled_metrics(files, capsys):
    tmp, x, y = files
    code, out, err = run(capsys, "evaluate", tmp / "m.keras", "--data", tmp / "d.npz",
                         "--format", "json", "--batch-size", "10")
    assert code == 0, err
    result = json.loads(out)
    loss, accuracy, top2 = expected_metrics(keras.saving.load_model(tmp / "m.keras"), x, y)
    assert result["loss"] == pytest.approx(loss, rel=1e-4)
    assert result["accuracy"] == pytest.approx(accuracy)
    assert result["top2"] == pytest.approx(top2)
    assert result["samples"] == 96
    code, out, _ = run(capsys, "evaluate", tmp / "m.keras", "--data", tmp / "d.npz")
    assert out.startswith(f"loss: {result['loss']:.6g}\naccuracy: {result['accuracy']:.6g}\n")


def test_evaluate_without_labels_is_one_line(files, capsys):
    tmp, _, _ = files
    code, out, err = run(capsys, "evaluate", tmp / "m.keras", "--data", tmp / "nolabels.npz")
    assert code == 1 and err.startswith(f"error: {tmp / 'nolabels.npz'}: no array 'y' (labels)")
    assert err.count("\n") == 1


def test_apply_keeps_the_compile_config_and_finetunes(files, capsys):
    tmp, x, y = files
    spec = tmp / "s.yaml"
    spec.write_text("version: 1\nfinetune: {learning_rate: 0.01, batch_size: 16}\nprune:\n"
                    "  - layer: fc1\n    fraction: 0.5\n")
    code, out, err = run(capsys, "apply", spec, tmp / "m.keras", "-o", tmp / "plain.keras")
    assert code == 0, err
    plain = keras.saving.load_model(tmp / "plain.keras")
    assert plain.compiled and type(plain.optimizer).__name__ == "SGD"
    assert plain.loss == "sparse_categorical_crossentropy"
    plain.fit(x, y, epochs=1, verbose=0)                       # fit works without compiling
    code, out, err = run(capsys, "apply", spec, tmp / "m.keras", "-o", tmp / "ft.keras",
                         "--data", tmp / "d.npz", "--finetune", "2")
    assert code == 0, err
    tuned = keras.saving.load_model(tmp / "ft.keras")
    original = keras.saving.load_model(tmp / "m.keras")
    pruned = keras.saving.load_model(tmp / "plain.keras")
    first = out.splitlines()[0]
    for name, model in (("original", original), ("fine-tuned", tuned)):
        assert f"{name} {expected_metrics(model, x, y)[1]:.4f}" in first
    assert tuned.compiled and type(tuned.optimizer).__name__ == "SGD"
    assert not np.allclose(tuned.get_layer("fc2").kernel.numpy(), pruned.get_layer("fc2").kernel.numpy())
    code, _, err = run(capsys, "apply", spec, tmp / "m.keras", "-o", tmp / "x.keras",
                       "--data", tmp / "nolabels.npz", "--finetune", "1")
    assert code == 1 and "no array 'y' (labels) (--finetune trains on labels)" in err


def test_sensitivity_measures_each_layer_alone_and_suggests_a_spec(files, capsys):
    tmp, x, y = files
    spec = tmp / "sens.yaml"
    spec.write_text("version: 1\nprune:\n  - type: Dense\n    exclude: [out]\n    fraction: 0.5\n")
    report, png, suggested = tmp / "r.json", tmp / "r.png", tmp / "suggested.yaml"
    code, out, err = run(capsys, "sensitivity", spec, tmp / "m.keras", "--data", tmp / "d.npz",
                         "-o", report, "--plot", png, "--suggest", "flops=0.6",
                         "--suggest-output", suggested)
    assert code == 0, err
    data = json.loads(report.read_text())
    assert [entry["layer"] for entry in data["layers"]] == ["fc1", "fc2"]
    assert [r["fraction"] for r in data["layers"][0]["results"]] == [0.1 * i for i in range(1, 10)] or \
        [r["fraction"] for r in data["layers"][0]["results"]] == [round(0.1 * i, 1) for i in range(1, 10)]
    model = keras.saving.load_model(tmp / "m.keras")
    w1, b1 = (v.numpy() for v in model.get_layer("fc1").weights)
    w2 = model.get_layer("fc2").kernel.numpy()
    # fc1 at 0.5: the 8 units with the smallest L1 norm (own column + bias + fc2's row) go
    norms = np.abs(w1).sum(0) + np.abs(b1) + np.abs(w2).sum(1)
    keep = np.sort(np.argsort(norms, kind="stable")[8:])
    h = np.maximum(x @ w1[:, keep] + b1[keep], 0)
    rest = keras.Sequential([keras.Input((12,)), model.get_layer("out")])
    h2 = np.maximum(h @ w2[keep] + model.get_layer("fc2").bias.numpy(), 0)
    expected = float(np.mean(np.asarray(rest(h2)).argmax(1) == y))
    assert data["layers"][0]["results"][4]["metric"] == pytest.approx(expected)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, err = run(capsys, "plan", suggested, tmp / "m.keras", "--format", "json")
    assert code == 0, err
    totals = json.loads(out)["totals"]["flops"]
    assert totals["after"] <= 0.6 * totals["before"]


def test_a_compiled_loss_object_is_evaluated_per_sample(files, capsys):
    """A loss object (here from_logits) averages over the batch when called; evaluate must still
    weigh every sample once, so batches of 10 give numpy's mean over all 96."""
    tmp, x, y = files
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    logits = layers.Dense(3, name="out")(layers.Dense(8, activation="relu", name="fc1")(inputs))
    model = keras.Model(inputs, logits)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.save(tmp / "logits.keras")
    code, out, err = run(capsys, "evaluate", tmp / "logits.keras", "--data", tmp / "d.npz",
                         "--format", "json", "--batch-size", "10")
    assert code == 0, err
    z = np.asarray(model(x), dtype=np.float64)
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    assert json.loads(out)["loss"] == pytest.approx(float(-log_p[np.arange(len(y)), y].mean()),
                                                    rel=1e-4)


def test_a_user_loss_class_without_reduction_in_its_config_is_per_sample():
    from compiler.evaluate import choose_loss

    class Scaled(keras.losses.Loss):
        def __init__(self, scale=2.0, name="scaled"):
            super().__init__(name=name)
            self.scale = scale

        def call(self, y_true, y_pred):
            return self.scale * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)

    y, out = np.zeros((4, 3), "float32"), np.arange(12, dtype="float32").reshape(4, 3)
    per_sample = keras.ops.convert_to_numpy(choose_loss(y, out, Scaled())(y, out))
    np.testing.assert_allclose(per_sample, 2 * (out ** 2).mean(1), rtol=1e-6)
