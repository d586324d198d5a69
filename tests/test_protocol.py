"""The rule protocol itself: weights named by path, parameter counts, and how emit builds weights.

Keras 3 does not keep variable names unique (an attention layer holds four ``kernel``s, a
Bidirectional LSTM two of each cell weight), so every stage names a weight by its path in its
layer; parameter counts must then equal Keras' own. A rebuilt layer's weights are created from the
sliced arrays directly: no initializer runs for them. A Keras error while rebuilding is prunec's
fault (a rule declared a wrong change), not the input's: exit code 3.
"""

import keras
import numpy as np
import pytest

from clirun import run
from compiler.api import apply, plan, register_rule
from compiler.rules import weight_paths
from exactness import spec_of


def mixed_model() -> keras.Model:
    """A MultiHeadAttention and a Bidirectional(LSTM): many weights share one name."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((5, 8))
    x = keras.layers.Dense(8, name="proj")(tokens)
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(6), name="bi")(x)
    return keras.Model(tokens, keras.layers.Dense(3, name="head")(x))


def test_weights_are_named_by_their_path_in_the_layer():
    model = mixed_model()
    assert list(weight_paths(model.get_layer("bi"))) == [
        "forward_lstm/lstm_cell/kernel", "forward_lstm/lstm_cell/recurrent_kernel",
        "forward_lstm/lstm_cell/bias", "backward_lstm/lstm_cell/kernel",
        "backward_lstm/lstm_cell/recurrent_kernel", "backward_lstm/lstm_cell/bias"]
    assert "attention_output/kernel" in weight_paths(model.get_layer("mha"))


def test_plan_counts_every_weight_as_keras_does():
    model = mixed_model()
    assert plan(model, spec_of("  - layer: proj\n    remove: [0]\n")).params[0] == model.count_params()
    rebuilt, resolved, _ = apply(spec_of("  - layer: mha\n    unit: heads\n    remove: [1]\n"), model)
    assert resolved.params == (model.count_params(), rebuilt.count_params())


def test_rebuilt_weights_come_from_the_sliced_arrays_without_running_an_initializer(monkeypatch):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="fc1"),
                              keras.layers.Dense(3, name="fc2")])
    for variable in model.weights:
        variable.assign(np.random.default_rng(0).normal(size=variable.shape).astype("float32"))

    def refuse(*args, **kwargs):
        raise AssertionError("an initializer ran for a rebuilt weight")

    monkeypatch.setattr(keras.initializers.GlorotUniform, "__call__", refuse)
    monkeypatch.setattr(keras.initializers.Zeros, "__call__", refuse)
    rebuilt, _, _ = apply(spec_of("  - layer: fc1\n    remove: [1, 3]\n"), model)
    kept = [0, 2, 4]
    np.testing.assert_array_equal(rebuilt.get_layer("fc1").kernel.numpy(),
                                  model.get_layer("fc1").kernel.numpy()[:, kept])
    np.testing.assert_array_equal(rebuilt.get_layer("fc2").kernel.numpy(),
                                  model.get_layer("fc2").kernel.numpy()[kept, :])


@keras.saving.register_keras_serializable(package="test_protocol")
class Widened(keras.layers.Layer):
    """A Dense of one's own whose config key is ``width``; its rule below wrongly says ``size``."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.width = width

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.width))

    def call(self, x):
        return x @ self.kernel

    def get_config(self):
        return {**super().get_config(), "width": self.width}


register_rule(Widened, "producer", weights={"kernel": {"in": 0, "out": 1}}, units="size")


def test_a_keras_error_while_rebuilding_is_an_internal_error(tmp_path, capsys):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(Widened(6, name="wide")(inputs)))
    model.save(tmp_path / "m.keras")
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nprune:\n  - layer: wide\n    remove: [0]\n")
    code, _, err = run(capsys, "apply", spec, tmp_path / "m.keras", "-o", tmp_path / "out.keras")
    assert code == 3 and err.count("\n") == 1
    assert err.startswith("error: could not rebuild the model: TypeError:")
    assert "(hint: this is a prunec bug, or a register_rule declaration" in err
    assert not (tmp_path / "out.keras").exists()
