"""Splits and slices of the channel axis (``ops.split``, ``x[..., a:b]``, ``ops.take``, ``ops.slice``)
and the blocks built from them (CSP / YOLO C2f, GhostNet's ghost module), against the oracle; the
rebuilt raw ops carry their new arguments, through a save and a load."""

import re

import keras
import numpy as np
import pytest
from keras import layers, ops

import reference
from breadth import assert_prunes_exactly, model_of, refusal, spec_of
from compiler.api import apply


def raw_op(model, kind):
    (op,) = [op for op in model.operations if type(op).__name__ == kind]
    return op


def node_arguments(model, kind):
    """The non-tensor arguments of ``model``'s own call of its raw op of ``kind``."""
    (node,) = [node for nodes in model._nodes_by_depth.values() for node in nodes
               if type(node.operation).__name__ == kind]
    return node.arguments.args[1:]


def roundtrip(model, tmp_path, x):
    path = tmp_path / "rebuilt.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    reference.assert_outputs_close(model, loaded, x, rtol=1e-6)
    return loaded


def split_model(sections):
    def build(x):
        a = layers.Conv2D(8, 1, name="conv_a")(x)
        parts = ops.split(a, sections, axis=-1)
        outs = [layers.Conv2D(3, 1, name=f"conv_{i}")(p) for i, p in enumerate(parts)]
        return layers.Concatenate(name="cat")(outs)
    return model_of(build)


def test_equal_split_stays_equal(tmp_path):
    model = split_model(2)
    before = model.count_params()
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [1, 6]\n",
                                       {"conv_0": [1], "conv_1": [2]})
    assert raw_op(rebuilt, "Split").indices_or_sections == 2
    assert [rebuilt.get_layer(f"conv_{i}").input.shape[-1] for i in (0, 1)] == [3, 3]
    assert rebuilt.count_params() == before - 2 * 4 - 2 * 3
    roundtrip(rebuilt, tmp_path, reference.random_inputs(model))


def test_equal_split_that_would_become_unequal_is_refused_naming_the_sections():
    text = re.sub(r"'split_\d+'", "'split'", refusal(split_model(2), "  - layer: conv_a\n    remove: [1, 2]\n"))
    assert text == ("spec.yaml:4:13: rule 1 (layer 'conv_a'): at 'split' (Split): its 2 equal "
                    "sections would become unequal (section 0 keeps 2 channels, section 1 keeps 4) "
                    "(hint: remove the same number of channels from every section)")


def test_split_at_explicit_indices_is_recomputed(tmp_path):
    model = split_model([3, 5])               # sections 0-2, 3-4, 5-7
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [0, 4, 7]\n",
                                       {"conv_0": [0], "conv_1": [1], "conv_2": [2]})
    assert raw_op(rebuilt, "Split").indices_or_sections == (2, 3)
    roundtrip(rebuilt, tmp_path, reference.random_inputs(model))


def test_split_section_left_empty_is_refused():
    text = refusal(split_model([3, 5]), "  - layer: conv_a\n    remove: [3, 4]\n")
    assert re.sub(r"'split_\d+'", "'split'", text).endswith("at 'split' (Split): section 1 of its split would keep no channel "
                         "(hint: keep at least one channel in every section)")


def slice_model(pick):
    def build(x):
        a = layers.Conv2D(8, 1, name="conv_a")(x)
        b = layers.Conv2D(3, 1, name="conv_b")(pick(a))
        c = layers.Conv2D(3, 1, name="conv_c")(a)
        return layers.Add(name="add")([b, c])
    return model_of(build)


@pytest.mark.parametrize("pick, zero_b, argument", [
    (lambda a: a[..., 2:6], [1], (Ellipsis, slice(1, 4, None))),
    (lambda a: a[:, :, :, 3:], [0], (slice(None), slice(None), slice(None), slice(2, None))),
    (lambda a: a[:, 0:6, ..., :6], [1, 3], (slice(None), slice(0, 6), Ellipsis, slice(None, 4))),
    (lambda a: ops.take(a, [1, 2, 5, 3], axis=-1), [0, 3], [1, 3]),
], ids=["ellipsis", "full_key", "spatial_too", "take"])
def test_channel_slices_get_new_arguments(pick, zero_b, argument, tmp_path):
    model = slice_model(pick)
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [1, 3]\n",
                                       {"conv_b": zero_b, "conv_c": [1, 3]})
    kind = "Take" if isinstance(argument, list) else "GetItem"
    assert node_arguments(rebuilt, kind) == (argument,)
    roundtrip(rebuilt, tmp_path, reference.random_inputs(model))


def test_ops_slice_on_the_channel_axis_gets_new_start_and_shape(tmp_path):
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 3), name="image")
    a = layers.Conv2D(8, 1, name="conv_a")(x)
    s = ops.slice(a, (0, 0, 0, 2), (-1, 6, 6, 5))           # channels 2..6
    y = layers.Conv2D(3, 1, name="conv_b")(s)
    model = keras.Model(x, layers.Dense(2, name="head")(layers.GlobalAveragePooling2D()(y)))
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [0, 4, 7]\n",
                                       {"conv_b": [2]})
    assert raw_op(rebuilt, "Slice").shape == (-1, 6, 6, 4)
    assert node_arguments(rebuilt, "Slice") == ((0, 0, 0, 1),)
    roundtrip(rebuilt, tmp_path, reference.random_inputs(model))


def test_a_slice_left_empty_is_refused():
    text = refusal(slice_model(lambda a: a[..., 2:4]), "  - layer: conv_a\n    remove: [2, 3]\n")
    assert re.sub(r"'get_item_\d+'", "'get_item'", text).endswith("at 'get_item' (GetItem): its channel slice [2:4] would keep no channel "
                         "(hint: keep at least one channel of the slice)")


def test_a_strided_or_single_channel_index_stops_removals():
    text = refusal(slice_model(lambda a: a[..., ::2]), "  - layer: conv_a\n    remove: [2]\n")
    assert "its channel slice has step 2" in text


def test_csp_block_prunes_across_its_split(tmp_path):
    """YOLO's C2f: cv1 -> split in halves -> a residual bottleneck on one -> concat all -> cv2."""
    def build(x):
        y = layers.Conv2D(8, 1, name="cv1")(x)
        y0, y1 = ops.split(y, 2, axis=-1)
        h = layers.Conv2D(4, 3, padding="same", activation="silu", name="b_conv1")(y1)
        h = layers.Conv2D(4, 3, padding="same", activation="silu", name="b_conv2")(h)
        y2 = layers.Add(name="b_add")([y1, h])
        return layers.Conv2D(6, 1, name="cv2")(layers.Concatenate(name="cat")([y0, y1, y2]))
    model = model_of(build)
    rebuilt, resolved = assert_prunes_exactly(
        model, "  - layer: cv1\n    remove: [0, 5]\n  - layer: b_conv1\n    remove: [2]\n",
        {"b_conv1": [1], "b_conv2": [2], "cv2": [0, 5, 9]})
    assert rebuilt.get_layer("b_conv2").filters == 3 and rebuilt.get_layer("cv2").kernel.shape[2] == 9
    roundtrip(rebuilt, tmp_path, reference.random_inputs(model))


def test_ghost_module_prunes_through_its_output_slice(tmp_path):
    """GhostNet: a primary conv, a cheap depthwise conv of it, both concatenated, sliced to width."""
    def build(x):
        primary = layers.Conv2D(3, 1, name="primary")(x)
        cheap = layers.DepthwiseConv2D(3, padding="same", name="cheap")(primary)
        ghost = layers.Concatenate(name="cat")([primary, cheap])[..., :5]
        return layers.Conv2D(4, 1, name="conv_b")(layers.BatchNormalization(name="bn")(ghost))
    model = model_of(build)
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: primary\n    remove: [1]\n",
                                       {"cheap": [1], "conv_b": [1, 4]})
    assert node_arguments(rebuilt, "GetItem") == ((Ellipsis, slice(None, 3, None)),)
    assert rebuilt.get_layer("bn").gamma.shape == (3,)
    roundtrip(rebuilt, tmp_path, reference.random_inputs(model))
