"""The rebuilt model keeps the original's compile configuration (loss, metrics, optimizer class), so
``fit`` works on it straight away -- from a file (loaded uncompiled) and in memory."""

import keras
import numpy as np
import pytest
from keras import layers

import reference
from breadth import model_of, spec_of
from clirun import run
from compiler.api import apply


def compiled_model():
    model = model_of(lambda x: layers.Conv2D(4, 1, name="conv_b")(
        layers.Conv2D(6, 3, padding="same", name="conv_a")(x)))
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=0.01), loss="mse",
                  metrics=["mae"])
    return model


def assert_trains_like_the_original(rebuilt, original):
    config = rebuilt.get_compile_config()
    assert config["loss"] == "mse" and config["metrics"] == ["mae"]
    assert config["optimizer"]["class_name"] == "RMSprop"
    assert config["optimizer"]["config"]["learning_rate"] == pytest.approx(0.01)
    x = reference.random_inputs(original, batch=8)
    history = rebuilt.fit(x, np.zeros((8, 2), "float32"), epochs=1, verbose=0)
    assert set(history.history) == {"loss", "mae"}


def test_a_pruned_model_from_a_file_is_compiled_like_the_original(tmp_path, capsys):
    model = compiled_model()
    params = model.count_params()
    model.save(tmp_path / "m.keras")
    (tmp_path / "s.yaml").write_text("version: 1\nprune:\n  - layer: conv_a\n    remove: [1, 4]\n")
    code, _, err = run(capsys, "apply", tmp_path / "s.yaml", tmp_path / "m.keras",
                       "-o", tmp_path / "out.keras")
    assert code == 0, err
    rebuilt = keras.saving.load_model(tmp_path / "out.keras")
    assert rebuilt.count_params() == params - 2 * (27 + 1) - 2 * 4
    assert_trains_like_the_original(rebuilt, model)


@pytest.mark.parametrize("mode", ["slice", "mask"])
def test_a_pruned_model_in_memory_is_compiled_like_the_original(mode):
    model = compiled_model()
    rebuilt, resolved, _ = apply(spec_of("  - layer: conv_a\n    remove: [1, 4]\n"), model, mode=mode)
    assert resolved.params == (model.count_params(), model.count_params() - 2 * 28 - 2 * 4)
    assert_trains_like_the_original(rebuilt, model)


def test_an_uncompiled_model_stays_uncompiled():
    model = model_of(lambda x: layers.Conv2D(4, 1, name="conv_b")(
        layers.Conv2D(6, 3, padding="same", name="conv_a")(x)))
    rebuilt, _, _ = apply(spec_of("  - layer: conv_a\n    remove: [1]\n"), model)
    assert not rebuilt.compiled
