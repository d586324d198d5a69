"""Channel shuffles written with raw ``keras.ops`` (``ops.reshape`` to groups, ``ops.transpose`` /
``ops.swapaxes`` / ``ops.moveaxis`` / ``x.reshape``, reshape back) in a ShuffleNet-v2 unit whose
channel split is ``ops.split`` or slicing: exact against the oracle, the rebuilt raw reshapes carry
their new shapes (through a save and a load), and a shuffle that cannot stay one is refused in one
line naming the op."""

import re

import keras
import numpy as np
import pytest
from keras import layers, ops

import reference
from breadth import assert_prunes_exactly, model_of, refusal


def transpose(y):
    return ops.transpose(y, (0, 1, 2, 4, 3))


def swapaxes(y):
    return ops.swapaxes(y, -1, -2)


def moveaxis(y):
    return ops.moveaxis(y, 4, 3)


def raw_shuffle(x, groups, swap=transpose, method=False):
    """ShuffleNet's shuffle in raw ops: (-1, H, W, g, C/g), swap the last two axes, (-1, H, W, C)."""
    _, h, w, c = x.shape
    y = x.reshape((-1, h, w, groups, c // groups)) if method else \
        ops.reshape(x, (-1, h, w, groups, c // groups))
    y = swap(y)
    return y.reshape((-1, h, w, c)) if method else ops.reshape(y, (-1, h, w, c))


def unit(split_with="split", swap=transpose, method=False):
    """ShuffleNet v2, stride 1, in raw ops: split in halves, one half through 1x1 - dw 3x3 - 1x1,
    ops.concatenate, raw shuffle, then a 1x1 conv."""
    def build(x):
        x = layers.Conv2D(8, 3, padding="same", name="stem")(x)
        a, b = ops.split(x, 2, axis=-1) if split_with == "split" else (x[..., :4], x[..., 4:])
        b = layers.Conv2D(4, 1, activation="relu", name="b_conv1")(b)
        b = layers.DepthwiseConv2D(3, padding="same", name="b_dw")(b)
        b = layers.BatchNormalization(name="b_bn")(b)
        b = layers.Conv2D(4, 1, activation="relu", name="b_conv2")(b)
        y = raw_shuffle(ops.concatenate([a, b], axis=-1), 2, swap, method)
        return layers.Conv2D(3, 1, name="head_conv")(y)
    return model_of(build)


def unnumbered(text: str) -> str:
    """``text`` with Keras' automatic op numbers dropped (``reshape_15`` -> ``reshape``)."""
    return re.sub(r"\b(reshape|transpose|swapaxes)_\d+\b", r"\1", text)


def reshapes(model):
    """The ``newshape`` of every raw reshape of ``model``, in graph order."""
    return [tuple(op.newshape) for op in model.operations if type(op).__name__ == "Reshape"]


@pytest.mark.parametrize("swap", [transpose, swapaxes, moveaxis])
def test_raw_shuffle_alone_is_the_permutation_it_claims(swap):
    model = model_of(lambda x: raw_shuffle(x, 3, swap), input_shape=(2, 2, 6), head=False)
    data = reference.random_inputs(model)
    np.testing.assert_array_equal(model(data).numpy(), data[..., [0, 2, 4, 1, 3, 5]])


@pytest.mark.parametrize("split_with, swap, method", [
    ("split", transpose, False), ("slice", swapaxes, False), ("split", moveaxis, True),
], ids=["split-transpose", "slice-swapaxes", "split-moveaxis-method"])
def test_raw_shufflenet_unit_prunes_the_same_index_of_every_group(split_with, swap, method,
                                                                  tmp_path):
    model = unit(split_with, swap, method)
    assert reshapes(model) == [(-1, 6, 6, 2, 4), (-1, 6, 6, 8)]
    # stem's 1 and 5 (one per section); index 1 of group 0 (stem's 1) takes index 1 of group 1
    # (b_conv2's 1) with it; head_conv reads the shuffled a0 b0 a1 b1 ...: positions 2 and 3 go
    rebuilt, resolved = assert_prunes_exactly(
        model, "  - layer: stem\n    remove: [1, 5]\n  - layer: b_conv1\n    remove: [0]\n",
        {"b_conv1": [1], "b_conv2": [0], "head_conv": [2, 3]})
    members = {m.layer: m.removed for g in resolved.groups for m in g.members}
    assert members == {"stem": (1, 5), "b_conv2": (1,), "b_conv1": (0,)}
    assert reshapes(rebuilt) == [(-1, 6, 6, 2, 3), (-1, 6, 6, 6)]
    assert rebuilt.get_layer("head_conv").kernel.shape[2] == 6
    path = tmp_path / "rebuilt.keras"
    rebuilt.save(path)
    loaded = keras.saving.load_model(path)
    assert reshapes(loaded) == [(-1, 6, 6, 2, 3), (-1, 6, 6, 6)]
    reference.assert_outputs_close(rebuilt, loaded, reference.random_inputs(model), rtol=1e-6)


def test_a_raw_reshape_that_keeps_the_channel_axis_gets_the_kept_count():
    """Squeeze-excite written with raw ops: (-1, C) -> (-1, 1, 1, C)."""
    def build(x):
        y = layers.Conv2D(6, 1, name="conv_a")(x)
        s = ops.reshape(layers.GlobalAveragePooling2D(name="gap")(y), (-1, 1, 1, 6))
        s = layers.Conv2D(6, 1, activation="sigmoid", name="excite")(s)
        return layers.Conv2D(4, 1, name="conv_b")(layers.Multiply(name="scale")([y, s]))
    model = model_of(build)
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [2]\n",
                                       {"excite": [2], "conv_b": [2]})
    assert reshapes(rebuilt) == [(-1, 1, 1, 5)]


def test_a_raw_flatten_prunes_every_position_and_one_that_merges_the_batch_is_refused():
    """``ops.reshape(y, (-1, H*W*C))`` flattens each sample; ``(-1, W*C)`` mixes samples' rows
    with channels (the batch axis becomes B*H): refused in one line, not tiled."""
    def build(width):
        return lambda x: layers.Dense(2, name="head")(
            ops.reshape(layers.Conv2D(4, 1, name="conv")(x), (-1, width)))
    model = model_of(build(6 * 6 * 4), head=False)
    assert_prunes_exactly(model, "  - layer: conv\n    remove: [1]\n",
                          {"head": [p * 4 + 1 for p in range(36)]}, {"head": 2})
    text = refusal(model_of(build(6 * 4), head=False), "  - layer: conv\n    remove: [1]\n")
    assert re.search(r"at 'reshape(_\d+)?' \(Reshape\): ops.reshape to \(-1, 24\) does not keep "
                     r"each sample's 144 values apart \(its first entry must be the batch\) "
                     r"\(path: conv -> reshape(_\d+)?\)$", text), text


def test_a_raw_shuffle_whose_group_cannot_lose_an_index_is_refused_naming_the_reshape():
    def build(x):
        y = ops.concatenate([layers.Conv2D(3, 1, name="conv_a")(x), x], axis=-1)
        return layers.Conv2D(4, 1, name="conv_b")(raw_shuffle(y, 2))
    text = refusal(model_of(build), "  - layer: conv_a\n    remove: [1]\n")
    assert unnumbered(text) == (
        "spec.yaml:4:13: rule 1 (layer 'conv_a'): cannot remove channel 1 of 'conv_a' "
        "(coupled by 'reshape'): it is model input 'image' (removing it would change the "
        "model's interface)")


@pytest.mark.parametrize("swap, why", [
    (lambda y: ops.transpose(y, (0, 1, 4, 2, 3)),
     "transpose to axes (0, 1, 4, 2, 3) moves the channel shuffle's axes elsewhere"),
    (lambda y: ops.swapaxes(y, 1, 4),
     "swapaxes to axes (0, 4, 2, 3, 1) moves the channel shuffle's axes elsewhere"),
], ids=["transpose", "swapaxes"])
def test_a_raw_permutation_that_breaks_the_shuffle_is_refused_naming_the_op(swap, why):
    def build(x):
        y = layers.Conv2D(6, 1, name="conv_a")(x)
        y = ops.reshape(swap(ops.reshape(y, (-1, 6, 6, 2, 3))), (-1, 6, 6, 6))
        return layers.Conv2D(4, 1, name="conv_b")(y)
    text = refusal(model_of(build), "  - layer: conv_a\n    remove: [0, 3]\n")
    op = "Transpose" if "transpose" in why else "Swapaxes"
    assert unnumbered(text) == (
        f"spec.yaml:4:13: rule 1 (layer 'conv_a'): cannot remove channel 0 of 'conv_a' (coupled "
        f"by 'reshape'): at '{op.lower()}' ({op}): {why} (path: conv_a -> reshape -> "
        f"{op.lower()})")


def test_a_raw_reshape_that_does_not_undo_the_shuffle_is_refused_naming_it():
    def build(x):
        y = layers.Conv2D(6, 1, name="conv_a")(x)
        y = ops.reshape(transpose(ops.reshape(y, (-1, 6, 6, 2, 3))), (-1, 36, 6))
        return layers.Dense(4, name="fc")(y)
    text = refusal(model_of(build, head=False), "  - layer: conv_a\n    remove: [0, 3]\n")
    assert re.search(r"at 'reshape_\d+' \(Reshape\): ops.reshape \(6, 6, 3, 2\) -> \(36, 6\) does "
                     r"not undo the channel shuffle's split of the channel axis", text), text
