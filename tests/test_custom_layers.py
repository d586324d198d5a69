"""Custom layers: ``register_rule`` for each kind, against the oracle; and what stays refused."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from compiler.api import apply, build_graph, plan, register_rule
from compiler.errors import ConstraintError, VerificationError
from exactness import assert_prunes_exactly, spec_of
from models import randomize

ROOT = Path(__file__).resolve().parents[1]


class Scale(keras.layers.Layer):
    """y[..., c] = x[..., c] * scale[c] + shift[c]; ``gain`` is one scalar for all channels."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")
        self.shift = self.add_weight(name="shift", shape=(input_shape[-1],), initializer="zeros")
        self.gain = self.add_weight(name="gain", shape=(), initializer="ones")

    def call(self, x):
        return (x * self.scale + self.shift) * self.gain


class Linear(keras.layers.Layer):
    """A Dense of one's own: y = x @ w + b, ``w`` stored (units, in) — transposed from Dense."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(self.units, input_shape[-1]))
        self.b = self.add_weight(name="b", shape=(self.units,), initializer="zeros")

    def call(self, x):
        return keras.ops.matmul(x, keras.ops.transpose(self.w)) + self.b

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class Larger(keras.layers.Layer):
    """y = max(a, b), channel by channel."""

    def call(self, inputs):
        return keras.ops.maximum(inputs[0], inputs[1])


class Widen(keras.layers.Layer):
    """Doubles the channels: wrongly declared per_channel below."""

    def call(self, x):
        return keras.ops.concatenate([x, x], axis=-1)


register_rule(Scale, "per_channel", weights={"scale": -1, "shift": -1})
register_rule(Linear, "producer", weights={"w": {"in": 1, "out": 0}, "b": {"out": 0}}, units="units")
register_rule(Larger, "elementwise")
register_rule(Widen, "per_channel")


# what each variable of the layers above is, for ``randomize``
ROLES = {"scale": "scale", "shift": "offset", "gain": "scale", "w": "kernel", "b": "offset"}


def custom_model() -> keras.Model:
    x = keras.Input((10,), name="features")
    a = keras.layers.Dense(8, activation="relu", name="fa")(x)
    a = Scale(name="scale")(a)
    b = Linear(8, name="lin")(x)
    m = Larger(name="larger")([a, b])
    h = Linear(6, name="lin2")(m)
    y = keras.layers.Dense(2, name="head")(keras.layers.ReLU(name="relu")(h))
    return randomize(keras.Model(x, y, name="custom"), 3, kernels=True, roles=ROLES)


def test_per_channel_weights_are_sliced_with_the_channel_and_elementwise_couples():
    model = custom_model()
    rebuilt, resolved = assert_prunes_exactly(model, "  - layer: fa\n    remove: [1, 6]\n", {"lin2": [1, 6]})
    (group,) = resolved.groups
    assert {m.layer: m.removed for m in group.members} == {"fa": (1, 6), "lin": (1, 6)}      # coupled through 'larger'
    keep = [0, 2, 3, 4, 5, 7]
    for name in ("scale", "shift"):
        np.testing.assert_array_equal(getattr(rebuilt.get_layer("scale"), name).numpy(),
                                      getattr(model.get_layer("scale"), name).numpy()[keep])
    assert rebuilt.get_layer("scale").gain.numpy() == model.get_layer("scale").gain.numpy()
    assert rebuilt.get_layer("lin").units == 6
    np.testing.assert_array_equal(rebuilt.get_layer("lin2").w.numpy(),
                                  model.get_layer("lin2").w.numpy()[:, keep])


def test_a_custom_producer_loses_its_outputs_and_its_config_follows():
    model = custom_model()
    rebuilt, resolved = assert_prunes_exactly(model, "  - layer: lin2\n    remove: [0, 5]\n", {"head": [0, 5]})
    assert rebuilt.get_layer("lin2").units == 4
    lin2 = next(change for change in resolved.layers if change.path == "lin2")
    assert lin2.config == {"units": 4} and lin2.params == (6 * 8 + 6, 4 * 8 + 4)
    assert lin2.flops == (2 * 8 * 6, 2 * 8 * 4)


def test_criteria_rank_channels_through_custom_rules():
    model = custom_model()
    resolved = plan(build_graph(model), spec_of("  - layer: fa\n    count: 3\n"))
    removed = {m.layer: m.removed for m in resolved.groups[0].members}
    assert len(removed["fa"]) == 3 and removed["fa"] == removed["lin"]


def test_a_wrong_declaration_stops_removal_with_its_reason():
    x = keras.Input((6,), name="features")
    h = keras.layers.Dense(4, name="fc")(x)
    y = keras.layers.Dense(2, name="head")(Widen(name="widen")(h))
    model = keras.Model(x, y)
    with pytest.raises(ConstraintError) as caught:
        plan(build_graph(model), spec_of("  - layer: fc\n    remove: [1]\n"))
    text = str(caught.value)
    assert "cannot remove channel 1 of 'fc'" in text and "(path: fc -> widen)" in text
    assert "it is declared per_channel but turns 4 channels into 8" in text


def test_a_listed_variable_of_the_wrong_width_stops_removal():
    class Mismatched(keras.layers.Layer):
        def build(self, input_shape):
            self.table = self.add_weight(name="table", shape=(3, 7))

        def call(self, x):
            return x

    register_rule(Mismatched, "per_channel", weights={"table": -1})
    x = keras.Input((6,), name="features")
    h = keras.layers.Dense(4, name="fc")(x)
    model = keras.Model(x, keras.layers.Dense(2, name="head")(Mismatched(name="odd")(h)))
    with pytest.raises(ConstraintError) as caught:
        plan(build_graph(model), spec_of("  - layer: fc\n    remove: [1]\n"))
    assert "its variable 'table' has 7 entries on axis -1, not one per channel (4)" in str(caught.value)


def test_a_custom_layer_without_a_rule_is_named_with_the_path():
    class Mystery(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    x = keras.Input((6,), name="features")
    h = keras.layers.Dense(5, name="fc1")(x)
    h = keras.layers.ReLU(name="act")(h)
    h = Mystery(name="mystery")(h)
    h = keras.layers.Dense(4, name="fc2")(h)
    model = keras.Model(x, keras.layers.Dense(2, name="head")(h))
    with pytest.raises(ConstraintError) as caught:
        plan(build_graph(model), spec_of("  - layer: fc1\n    remove: [2]\n"))
    assert str(caught.value) == (
        "spec.yaml:4:13: rule 1 (layer 'fc1'): cannot remove channel 2 of 'fc1': it is read by "
        "'mystery' (Mystery), and prunec has no rule for Mystery (path: fc1 -> act -> mystery)")
    # behind the unknown layer, removal is fine: nothing reaches it
    assert_prunes_exactly(model, "  - layer: fc2\n    remove: [0]\n", {"head": [0]})


@pytest.mark.parametrize("kind, kwargs, message", [
    ("same", {}, "unknown kind 'same'; choose one of per_channel, elementwise, producer"),
    ("per_channel", {"weights": {"scale": "last"}}, "must be the channel axis (an int)"),
    ("producer", {"weights": {"w": {"in": 0}}}, "a producer needs units="),
    ("producer", {"weights": {"w": {"rows": 0}}, "units": "units"}, "must map 'in' and/or 'out'"),
    ("elementwise", {"weights": {"w": -1}}, "an elementwise rule slices no weights"),
])
def test_bad_declarations_are_refused(kind, kwargs, message):
    class Fresh(keras.layers.Layer):
        pass

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        register_rule(Fresh, kind, **kwargs)


def test_a_class_keeps_its_rule():
    with pytest.raises(ValueError, match="Scale already has the rule ScaleRule"):
        register_rule(Scale, "per_channel")
    with pytest.raises(ValueError, match="Dense already has the rule DenseRule"):
        register_rule(keras.layers.Dense, "producer", units="units")


def test_the_worked_example_runs(tmp_path, capsys):
    example = runpy.run_path(str(ROOT / "examples" / "custom_layer" / "run.py"))
    assert example["main"](tmp_path) == 0
    assert keras.saving.load_model(tmp_path / "scaled_cnn_small.keras").get_layer("conv1").filters == 4
    out = capsys.readouterr().out
    assert "prunec has no rule for Unknown (path: conv1 -> scale)" in out
    assert "conv1 8 -> 4 filters, scale 8 -> 4" in out


def test_a_per_channel_declaration_on_a_mixing_layer_fails_verification_and_says_so():
    class Roll(keras.layers.Layer):
        """Mixes channels (each output reads its neighbour): declared per_channel on purpose."""

        def call(self, x):
            return keras.ops.roll(x, 1, axis=-1)

    register_rule(Roll, "per_channel")
    x = keras.Input((6,), name="features")
    h = keras.layers.Dense(5, name="fc")(x)
    model = randomize(keras.Model(x, keras.layers.Dense(2, name="head")(Roll(name="roll")(h))), 3, kernels=True)
    with pytest.raises(VerificationError) as caught:
        apply(spec_of("  - layer: fc\n    remove: [1]\n"), model)
    assert "or a register_rule declaration that does not match its layer" in str(caught.value)
    assert "; first at 'roll' (Roll), relative difference " in str(caught.value)   # not at 'fc'


def test_the_command_line_with_user_layers_imported_first(tmp_path):
    example = ROOT / "examples" / "custom_layer"
    runpy.run_path(str(example / "run.py"))["main"](tmp_path)
    script = example / "prunec_with_my_layers.py"
    done = subprocess.run([sys.executable, str(script), "plan", str(example / "scale.yaml"),
                           str(tmp_path / "scaled_cnn.keras")], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0 and "error:" not in done.stderr    # TensorFlow banners may show
    assert "conv1" in done.stdout and "(None, 16, 16, 8) -> (None, 16, 16, 4)" in done.stdout
