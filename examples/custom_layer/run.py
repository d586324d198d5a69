"""Worked example: prune through a custom layer (``my_layers.ChannelScale``).

1. A CNN with a ``ChannelScale`` between two convolutions is built and saved.
2. Without a rule, prunec refuses to remove conv1's filters, naming the layer and the path.
3. With ``register_rule(ChannelScale, "per_channel", weights={"scale": -1})`` (done by importing
   ``my_layers``) the same spec compiles: conv1 loses 4 filters, ``scale`` loses the same 4
   entries, conv2 loses the matching input rows; the rebuilt model is verified against the
   original and written.
4. The written model loads with the custom class (registered with Keras, or passed as
   ``custom_objects``) and computes what the original computes with those channels zeroed.

Run: ``python examples/custom_layer/run.py`` (from the repository root).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from compiler.runtime import import_keras_quietly

import_keras_quietly()            # TensorFlow's start-up banners stay off the example's output

import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

from compiler.api import apply, build_graph, load_spec, plan  # noqa: E402
from compiler.errors import ConstraintError  # noqa: E402
from compiler.rules import rule_for  # noqa: E402


def scaled_cnn(scale_class) -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input((16, 16, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    h = scale_class(name="scale")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    model = keras.Model(x, keras.layers.Dense(3, name="head")(h), name="scaled_cnn")
    scale = model.get_layer("scale").scale
    scale.assign(np.linspace(0.5, 2.0, scale.shape[0]).astype("float32"))
    return model


def main(out: Path = OUT) -> int:
    out.mkdir(exist_ok=True)

    # 2. A layer class prunec knows nothing about: a removal that reaches it is refused.
    class Unknown(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(name="scale", shape=(input_shape[-1],))

        def call(self, x):
            return x * self.scale

    spec = load_spec(HERE / "scale.yaml")
    try:
        plan(build_graph(scaled_cnn(Unknown)), spec)
        raise SystemExit("expected a refusal for a layer without a rule")
    except ConstraintError as error:
        print(f"without a rule: error: {error}")

    # 3. The user's layer, with its rule: import my_layers.
    from my_layers import ChannelScale

    print(f"with a rule:    {type(rule_for(ChannelScale(name='probe'))).__name__} "
          "(register_rule(ChannelScale, 'per_channel', weights={'scale': -1}))")
    model = scaled_cnn(ChannelScale)
    path = out / "scaled_cnn.keras"
    model.save(path)
    smaller, the_plan, difference = apply(spec, model)
    print(f"apply:          params {the_plan.params[0]} -> {the_plan.params[1]}, verified "
          f"(max relative difference {difference:.1g})")
    print(f"                conv1 {model.get_layer('conv1').filters} -> "
          f"{smaller.get_layer('conv1').filters} filters, scale "
          f"{model.get_layer('scale').scale.shape[0]} -> {smaller.get_layer('scale').scale.shape[0]}")
    kept = [c for c in range(8) if c not in (0, 3, 5, 6)]
    assert np.array_equal(smaller.get_layer("scale").scale.numpy(),
                          model.get_layer("scale").scale.numpy()[kept])

    # The command line, with my_layers imported first (prunec_with_my_layers.py does that).
    from compiler.cli import main as prunec

    written = out / "scaled_cnn_small.keras"
    code = prunec(["apply", str(HERE / "scale.yaml"), str(path), "-o", str(written)])
    assert code == 0

    # 4. The written model loads with the class and matches the original with channels zeroed.
    loaded = keras.saving.load_model(written, custom_objects={"ChannelScale": ChannelScale})
    x = np.random.default_rng(1).standard_normal((4, 16, 16, 3)).astype("float32")
    zeroed = scaled_cnn(ChannelScale)
    zeroed.set_weights(model.get_weights())
    kernel, bias = zeroed.get_layer("conv2").get_weights()
    kernel[:, :, [0, 3, 5, 6], :] = 0                 # conv2 reads the removed channels as zero
    zeroed.get_layer("conv2").set_weights([kernel, bias])
    worst = float(np.max(np.abs(loaded(x) - zeroed(x))))
    print(f"reloaded:       {written.name} matches the original with conv1's 4 filters read as "
          f"zero (max abs difference {worst:.1g})")
    assert worst < 1e-5
    return 0


if __name__ == "__main__":
    sys.exit(main())
