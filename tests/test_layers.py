"""Every layer rule of the families issue, one small model each, against the independent oracle.

As in ``test_core.py``, each case names the channels to remove and, by hand, which layer inputs
must then read zero; ``reference.zeroed_reads_model`` builds that model without prunec code and the
rebuilt model must match it. Weight shapes after slicing are asserted from the Keras layouts
(``DepthwiseConv2D`` kernel ``(kh, kw, C, m)``, ``Conv2DTranspose`` kernel ``(kh, kw, out, in)``).
"""

import keras
import numpy as np
import pytest
from keras import layers
from keras.src.applications.convnext import LayerScale

import reference
from compiler.api import apply, format_plan
from exactness import assert_params_counted, assert_prunes_exactly, refusal, spec_of
from models import randomize


def chain(input_shape, *body, head_pool=layers.GlobalAveragePooling2D, name="chain") -> keras.Model:
    """Input -> body layers in order -> pooling -> Dense(2, name='head')."""
    keras.utils.set_random_seed(0)
    x = keras.Input(input_shape, name="image")
    y = x
    for layer in body:
        y = layer(y)
    y = layers.Dense(2, name="head")(head_pool(name="pool")(y) if head_pool else y)
    return randomize(keras.Model(x, y, name=name))


# -- depthwise and separable --------------------------------------------------------------------

def test_depthwise_multiplier_removes_every_output_of_an_input_channel():
    model = chain((6, 6, 3), layers.Conv2D(4, 3, padding="same", name="conv_a"),
                  layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw"),
                  layers.BatchNormalization(name="bn"), layers.ReLU(name="relu"),
                  layers.Conv2D(3, 1, name="conv_b"))
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [1]\n",
                                       {"conv_b": [2, 3]}, {"conv_a": 3, "dw": 6, "bn": 6})
    kernel = model.get_layer("dw").get_weights()[0]
    np.testing.assert_array_equal(rebuilt.get_layer("dw").get_weights()[0], kernel[:, :, [0, 2, 3], :])
    assert rebuilt.get_layer("dw").depth_multiplier == 2


def test_depthwise_conv1d():
    model = chain((10, 2), layers.Conv1D(5, 3, padding="same", name="conv_a"),
                  layers.DepthwiseConv1D(3, depth_multiplier=3, name="dw"),
                  layers.Conv1D(4, 1, name="conv_b"), head_pool=layers.GlobalAveragePooling1D)
    assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [0, 4]\n",
                          {"conv_b": [0, 1, 2, 12, 13, 14]}, {"dw": 9})


@pytest.mark.parametrize("conv, sep, pool, shape", [
    (layers.Conv2D, layers.SeparableConv2D, layers.GlobalAveragePooling2D, (6, 6, 3)),
    (layers.Conv1D, layers.SeparableConv1D, layers.GlobalAveragePooling1D, (9, 3)),
])
def test_separable_conv_depthwise_part_follows_input_pointwise_part_shrinks(conv, sep, pool, shape):
    model = chain(shape, conv(5, 3, padding="same", name="conv_a"),
                  sep(6, 3, depth_multiplier=2, padding="same", name="sep"),
                  conv(3, 1, name="conv_b"), head_pool=pool)
    rebuilt, _ = assert_prunes_exactly(
        model, "  - layer: conv_a\n    remove: [3]\n  - layer: sep\n    remove: [1, 4]\n",
        {"sep": [3], "conv_b": [1, 4]}, {"conv_a": 4, "sep": 4})
    weights = {v.name: v.numpy() for v in rebuilt.get_layer("sep").weights}
    assert weights["depthwise_kernel"].shape[-2:] == (4, 2)
    assert weights["pointwise_kernel"].shape[-2:] == (8, 4)


# -- transposed and grouped convolutions --------------------------------------------------------

@pytest.mark.parametrize("conv, transpose, pool, shape", [
    (layers.Conv1D, layers.Conv1DTranspose, layers.GlobalAveragePooling1D, (5, 3)),
    (layers.Conv2D, layers.Conv2DTranspose, layers.GlobalAveragePooling2D, (4, 4, 3)),
    (layers.Conv3D, layers.Conv3DTranspose, layers.GlobalAveragePooling3D, (3, 3, 3, 2)),
])
def test_conv_transpose_kernel_has_outputs_before_inputs(conv, transpose, pool, shape):
    model = chain(shape, conv(6, 3, padding="same", name="conv_a"),
                  transpose(5, 2, strides=2, name="tconv"), conv(3, 1, name="conv_b"), head_pool=pool)
    rebuilt, _ = assert_prunes_exactly(
        model, "  - layer: conv_a\n    remove: [2]\n  - layer: tconv\n    remove: [0, 3]\n",
        {"tconv": [2], "conv_b": [0, 3]}, {"conv_a": 5, "tconv": 3})
    kernel = model.get_layer("tconv").get_weights()[0]
    np.testing.assert_array_equal(rebuilt.get_layer("tconv").get_weights()[0],
                                  kernel[..., [1, 2, 4], :][..., [0, 1, 3, 4, 5]])


def grouped_model():
    return chain((6, 6, 3), layers.Conv2D(8, 3, padding="same", name="conv_a"),
                 layers.Conv2D(6, 3, padding="same", groups=2, name="gconv"),
                 layers.Conv2D(3, 1, name="conv_b"))


def test_grouped_conv_removes_whole_groups():
    model = grouped_model()
    rebuilt, resolved = assert_prunes_exactly(
        model, "  - layer: conv_a\n    remove: [1]\n",
        {"gconv": [0, 1, 2, 3], "conv_b": [0, 1, 2]}, {"conv_a": 4, "gconv": 3})
    (group,) = resolved.groups
    assert {m.layer: m.removed for m in group.members} == {"conv_a": (0, 1, 2, 3), "gconv": (0, 1, 2)}
    assert group.coupled_by == ("gconv",)
    layer = rebuilt.get_layer("gconv")
    assert (layer.groups, layer.filters) == (1, 3)
    np.testing.assert_array_equal(layer.get_weights()[0], model.get_layer("gconv").get_weights()[0][..., 3:])


def test_grouped_conv_criterion_counts_groups():
    model = grouped_model()
    rebuilt, resolved = apply(spec_of("  - layer: gconv\n    fraction: 0.5\n"), model)[:2]
    assert_params_counted(resolved, model, rebuilt)
    (group,) = resolved.groups
    removed = {m.layer: m.removed for m in group.members}
    assert removed["gconv"] in ((0, 1, 2), (3, 4, 5))
    assert removed["conv_a"] == ((0, 1, 2, 3) if removed["gconv"] == (0, 1, 2) else (4, 5, 6, 7))
    assert rebuilt.get_layer("gconv").filters == 3


def test_grouped_conv_on_the_model_input_says_why():
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 4), name="image")
    y = layers.Conv2D(6, 3, groups=2, name="gconv")(x)
    y = layers.Dense(2, name="head")(layers.GlobalAveragePooling2D(name="pool")(y))
    text = refusal(keras.Model(x, y), "  - layer: gconv\n    remove: [0]\n")
    assert ("cannot remove channel 0 of 'gconv' (coupled by 'gconv'): it is model input 'image' "
            "(removing it would change the model's interface)") in text


# -- per-channel weights ------------------------------------------------------------------------

@pytest.mark.parametrize("shared_axes, alpha_shape", [([1, 2], (1, 1, 4)), (None, (5, 5, 4))])
def test_prelu_alpha_is_sliced_on_its_channel_axis(shared_axes, alpha_shape):
    model = chain((5, 5, 3), layers.Conv2D(6, 3, padding="same", name="conv_a"),
                  layers.PReLU(shared_axes=shared_axes, name="prelu"), layers.Conv2D(3, 1, name="conv_b"))
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [2, 5]\n",
                                       {"conv_b": [2, 5]}, {"prelu": 4})
    alpha = model.get_layer("prelu").get_weights()[0]
    np.testing.assert_array_equal(rebuilt.get_layer("prelu").get_weights()[0], alpha[..., [0, 1, 3, 4]])
    assert rebuilt.get_layer("prelu").get_weights()[0].shape == alpha_shape


def test_layer_scale_gamma_is_sliced_and_projection_dim_shrinks():
    model = chain((4, 4, 3), layers.Dense(8, name="fc_a"), LayerScale(0.1, 8, name="scale"),
                  layers.Dense(3, name="fc_b"))
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: fc_a\n    remove: [1, 6]\n",
                                       {"fc_b": [1, 6]}, {"scale": 6})
    new = rebuilt.get_layer("scale")
    assert new.projection_dim == 6
    np.testing.assert_array_equal(new.gamma.numpy(), model.get_layer("scale").gamma.numpy()[[0, 2, 3, 4, 5, 7]])


def test_oracle_copies_unnamed_variables():
    model = chain((4, 4, 3), layers.Dense(8, name="fc_a"), LayerScale(0.1, 8, name="scale"))
    x = reference.random_inputs(model)
    reference.assert_outputs_close(model, reference.zeroed_reads_model(model, {}), x, rtol=1e-6)


# -- normalizations that mix channels -----------------------------------------------------------

def layer_norm_model(norm):
    return chain((4, 4, 3), layers.Dense(8, name="fc_a"), norm, layers.Dense(3, name="fc_b"))


@pytest.mark.parametrize("norm", [layers.LayerNormalization(name="norm"),
                                  layers.GroupNormalization(groups=1, name="norm")])
def test_statistics_norm_refuses_exact_removal_naming_the_layer(norm):
    text = refusal(layer_norm_model(norm), "  - layer: fc_a\n    remove: [1]\n")
    kind = type(norm).__name__
    assert text == (f"spec.yaml:4:13: rule 1 (layer 'fc_a'): cannot remove channel 1 of 'fc_a': at "
                    f"'norm' ({kind}): its mean and variance are taken across channels, so removal is "
                    "not exact (a rule may opt in with 'exact: false') (path: fc_a -> norm)")


def test_group_norm_with_several_groups_is_refused_even_when_approximate():
    model = layer_norm_model(layers.GroupNormalization(groups=2, name="norm"))
    text = refusal(model, "  - layer: fc_a\n    remove: [1]\n    exact: false\n")
    assert text.endswith("cannot remove channel 1 of 'fc_a': at 'norm' (GroupNormalization): its "
                         "groups (2) would have to be regrouped (path: fc_a -> norm)")


def test_layer_norm_with_exact_false_is_approximate_end_to_end():
    model = layer_norm_model(layers.LayerNormalization(epsilon=1e-3, name="norm"))
    rebuilt, resolved, difference = apply(spec_of("  - layer: fc_a\n    remove: [1, 4]\n    exact: false\n"), model)
    assert difference is None and resolved.approximate
    assert_params_counted(resolved, model, rebuilt)
    (group,) = resolved.groups
    assert group.approximate
    assert "group 1: rule 1 (APPROXIMATE)\n  fc_a  removes 2 of 8  1,4\n" in format_plan(resolved)
    # what the approximate model computes: LayerNormalization over the six kept channels
    keep = [0, 2, 3, 5, 6, 7]
    x = reference.random_inputs(model)
    k_a, b_a = model.get_layer("fc_a").get_weights()
    gamma, beta = model.get_layer("norm").get_weights()
    k_b, b_b = model.get_layer("fc_b").get_weights()
    k_h, b_h = model.get_layer("head").get_weights()
    h = x @ k_a[:, keep] + b_a[keep]
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-3) * gamma[keep] + beta[keep]
    expected = (h @ k_b[keep] + b_b).mean(axis=(1, 2)) @ k_h + b_h
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rebuilt(x)), expected, rtol=1e-4, atol=1e-5)


# -- Concatenate on a positive axis, broadcast Multiply, flat Reshape -----------------------------

def test_concatenate_with_positive_channel_axis_shifts_offsets():
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 3), name="image")
    a = layers.Conv2D(4, 3, padding="same", name="conv_a")(x)
    b = layers.Conv2D(4, 3, padding="same", name="conv_b")(x)
    c = layers.Concatenate(axis=3, name="cat")([a, b])
    c = layers.Conv2D(3, 1, name="conv_c")(c)
    y = layers.Dense(2, name="head")(layers.GlobalAveragePooling2D(name="gap")(c))
    model = randomize(keras.Model(x, y), kernels=True)
    assert_prunes_exactly(model, "  - layer: conv_b\n    remove: [1]\n", {"conv_c": [5]},
                          {"cat": 7, "conv_a": 4})


def test_multiply_by_a_broadcast_attention_map_couples_nothing():
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 3), name="image")
    f = layers.Conv2D(8, 3, padding="same", name="feat")(x)
    att = layers.Conv2D(1, 1, activation="sigmoid", name="att")(f)
    m = layers.Multiply(name="mul")([f, att])
    y = layers.Dense(2, name="head")(layers.GlobalAveragePooling2D(name="gap")(m))
    model = randomize(keras.Model(x, y), kernels=True)
    assert_prunes_exactly(model, "  - layer: feat\n    remove: [0, 3]\n",
                          {"att": [0, 3], "head": [0, 3]}, {"feat": 6, "att": 1, "mul": 6})


def test_reshape_to_one_flat_axis_drops_the_channel_at_every_position():
    keras.utils.set_random_seed(0)
    x = keras.Input((3, 3, 2), name="image")
    c = layers.Conv2D(4, 1, name="conv")(x)
    f = layers.Reshape((36,), name="flat")(c)
    y = layers.Dense(2, name="head")(f)
    model = randomize(keras.Model(x, y), kernels=True)
    assert_prunes_exactly(model, "  - layer: conv\n    remove: [1]\n",
                          {"head": [p * 4 + 1 for p in range(9)]}, {"flat": 27})


# -- reshape, embedding, raw ops ----------------------------------------------------------------

def test_reshape_that_moves_channels_is_refused():
    model = chain((4, 4, 3), layers.Conv2D(6, 1, name="conv_a"), layers.Reshape((4, 24), name="reshape"),
                  layers.Dense(3, name="fc_b"), head_pool=layers.GlobalAveragePooling1D)
    text = refusal(model, "  - layer: conv_a\n    remove: [0]\n")
    assert "at 'reshape' (Reshape): Reshape (4, 4, 6) -> (4, 24) moves channels across axes" in text


def test_embedding_output_dimension_is_prunable():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((7,), dtype="int32", name="tokens")
    y = layers.Embedding(20, 8, name="embed")(tokens)
    y = layers.Dense(4, activation="relu", name="fc")(y)
    y = layers.Dense(2, name="head")(layers.GlobalAveragePooling1D(name="pool")(y))
    model = randomize(keras.Model(tokens, y))
    x = np.random.default_rng(0).integers(0, 20, (4, 7)).astype("int32")
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: embed\n    remove: [0, 3]\n",
                                       {"fc": [0, 3]}, {"embed": 6}, x=x)
    assert rebuilt.get_layer("embed").output_dim == 6
    np.testing.assert_array_equal(rebuilt.get_layer("embed").get_weights()[0],
                                  model.get_layer("embed").get_weights()[0][:, [1, 2, 4, 5, 6, 7]])


def hard_swish_model(constant):
    """MobileNetV3's hard-swish as raw keras.ops: x * relu6(x + 3) * (1 / 6)."""
    keras.utils.set_random_seed(0)
    x = keras.Input((5, 5, 3), name="image")
    a = layers.Conv2D(6, 3, padding="same", name="conv_a")(x)
    h = a * keras.ops.relu6(a + 3.0) * constant
    h = layers.Conv2D(3, 1, name="conv_b")(h)
    y = layers.Dense(2, name="head")(layers.GlobalAveragePooling2D(name="pool")(h))
    return randomize(keras.Model(x, y))


def test_raw_ops_with_scalar_constants_pass_channels_through():
    assert_prunes_exactly(hard_swish_model(1.0 / 6.0), "  - layer: conv_a\n    remove: [0, 2]\n",
                          {"conv_b": [0, 2]}, {"conv_a": 4})


def test_raw_op_with_a_per_channel_constant_is_refused():
    text = refusal(hard_swish_model(np.arange(1, 7, dtype="float32")), "  - layer: conv_a\n    remove: [0]\n")
    assert "it combines them with a per-channel constant" in text


def test_a_large_kernel_sliced_on_both_axes_in_one_step():
    keras.utils.set_random_seed(0)
    x = keras.Input((16,), name="features")
    h = layers.Dense(2048, name="fc_a")(x)
    h = layers.Dense(2048, name="fc_b")(h)           # 2048 * 2048 = 2**22 entries: the one-step path
    model = randomize(keras.Model(x, layers.Dense(2, name="head")(h)))
    gone_a, gone_b = list(range(0, 2048, 3)), list(range(1, 2048, 2))
    rebuilt, _ = assert_prunes_exactly(
        model, f"  - layer: fc_a\n    remove: {gone_a}\n  - layer: fc_b\n    remove: {gone_b}\n",
        {"fc_b": gone_a, "head": gone_b}, {"fc_a": 2048 - len(gone_a), "fc_b": 1024})
    rows = [i for i in range(2048) if i % 3]
    kernel = model.get_layer("fc_b").get_weights()[0]
    np.testing.assert_array_equal(rebuilt.get_layer("fc_b").get_weights()[0], kernel[rows][:, 0::2])


@pytest.mark.parametrize("sequential", [True, False])
def test_channels_flowing_into_a_nested_model_shrink_its_input(sequential):
    keras.utils.set_random_seed(0)
    inner = [layers.Conv2D(5, 3, padding="same", name="conv1"), layers.ReLU(name="relu")]
    if sequential:           # like ConvNeXt's downsampling blocks: Input (None, 6, 6, 8) fixed
        backbone = keras.Sequential([keras.Input((6, 6, 8))] + inner, name="backbone")
    else:
        bi = keras.Input((6, 6, 8), name="backbone_in")
        backbone = keras.Model(bi, inner[1](inner[0](bi)), name="backbone")
    x = keras.Input((6, 6, 3), name="image")
    y = backbone(layers.Conv2D(8, 3, padding="same", name="conv_a")(x))
    model = randomize(keras.Model(x, layers.Dense(2, name="head")(layers.Flatten(name="flat")(y))))
    rebuilt, resolved = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [1, 6]\n",
                                              {"backbone/conv1": [1, 6]}, {"conv_a": 6, "backbone": 5})
    assert resolved.model_inputs == (("backbone", ((None, 6, 6, 6),)),)
    assert type(rebuilt.get_layer("backbone")) is type(backbone)
    assert tuple(rebuilt.get_layer("backbone").input.shape) == (None, 6, 6, 6)
