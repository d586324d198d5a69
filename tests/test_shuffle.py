"""Channel shuffle (Reshape to groups, swap the last two axes, Reshape back) and a ShuffleNet-v2 unit:
exact when every group loses as many channels, refused in one line naming the shuffle otherwise."""

import numpy as np
from keras import layers, ops

import reference
from breadth import assert_prunes_exactly, model_of, refusal


def shuffle(x, groups, prefix="shuffle"):
    _, h, w, c = x.shape
    x = layers.Reshape((h, w, groups, c // groups), name=f"{prefix}_split")(x)
    x = layers.Permute((1, 2, 4, 3), name=f"{prefix}_swap")(x)
    return layers.Reshape((h, w, c), name=f"{prefix}_merge")(x)


def shufflenet_unit():
    """ShuffleNet v2, stride 1: split in halves, one half through 1x1 - dw 3x3 - 1x1, concat, shuffle."""
    def build(x):
        x = layers.Conv2D(8, 3, padding="same", name="stem")(x)
        a, b = ops.split(x, 2, axis=-1)
        b = layers.Conv2D(4, 1, activation="relu", name="b_conv1")(b)
        b = layers.DepthwiseConv2D(3, padding="same", name="b_dw")(b)
        b = layers.BatchNormalization(name="b_bn")(b)
        b = layers.Conv2D(4, 1, activation="relu", name="b_conv2")(b)
        y = shuffle(layers.Concatenate(name="cat")([a, b]), 2)
        return layers.Conv2D(3, 1, name="head_conv")(y)
    return model_of(build)


def test_shuffle_alone_is_the_permutation_it_claims():
    model = model_of(lambda x: shuffle(x, 3), input_shape=(2, 2, 6), head=False)
    data = reference.random_inputs(model)
    np.testing.assert_array_equal(model(data).numpy(), data[..., [0, 2, 4, 1, 3, 5]])


def test_shufflenet_unit_prunes_the_same_index_of_every_group():
    model = shufflenet_unit()
    rebuilt, resolved = assert_prunes_exactly(
        model, "  - layer: stem\n    remove: [1, 5]\n  - layer: b_conv1\n    remove: [0]\n",
        {"b_conv1": [1], "b_conv2": [0], "head_conv": [2, 3]})
    # index 1 of group 0 (stem's channel 1) takes index 1 of group 1 (b_conv2's channel 1) with it
    members = {m.layer: m.removed for g in resolved.groups for m in g.members}
    assert members == {"stem": (1, 5), "b_conv2": (1,), "b_conv1": (0,)}
    assert resolved.warnings == ()      # a coupled partner loses the same channels: no warning
    assert rebuilt.get_layer("shuffle_split").target_shape == (6, 6, 2, 3)
    assert rebuilt.get_layer("shuffle_merge").target_shape == (6, 6, 6)
    assert rebuilt.get_layer("head_conv").kernel.shape[2] == 6


def test_a_group_that_cannot_lose_an_index_refuses_the_others_naming_the_shuffle():
    def build(x):
        y = layers.Concatenate(name="cat")([layers.Conv2D(3, 1, name="conv_a")(x), x])
        return layers.Conv2D(4, 1, name="conv_b")(shuffle(y, 2))
    text = refusal(model_of(build), "  - layer: conv_a\n    remove: [1]\n")
    assert text == ("spec.yaml:4:13: rule 1 (layer 'conv_a'): cannot remove channel 1 of 'conv_a' "
                    "(coupled by 'shuffle_split'): it is model input 'image' (removing it would "
                    "change the model's interface)")


def test_a_layer_reading_channels_spread_over_two_axes_stops_removals():
    def build(x):
        y = layers.Conv2D(6, 1, name="conv_a")(x)
        y = layers.Reshape((6, 6, 2, 3), name="split_axis")(y)
        return layers.Dense(2, name="fc")(y)            # mixes the 3 of each group
    text = refusal(model_of(build, head=False), "  - layer: conv_a\n    remove: [0, 3]\n")
    assert text.endswith("at 'fc' (Dense): its input's channels are spread over two axes (a "
                         "channel shuffle must swap them and Reshape them back first) "
                         "(path: conv_a -> split_axis -> fc)")
