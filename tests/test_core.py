"""The correctness law on every topology of the core issue, against the independent oracle.

Each case names the channels to remove and, independently, which layer inputs must then read zero
(``zero``): the oracle in ``reference.py`` builds that model without any prunec code, and the
rebuilt model must match it. Shapes are asserted by hand too.
"""

import keras
import numpy as np
import pytest

import models
import reference
from compiler.api import build_graph, plan
from exactness import assert_prunes_exactly, refusal, spec_of


def test_seed_dense_412_keeps_matching_rows_of_next_kernel():
    model = models.mnist_cnn()
    removed = list(range(0, 500, 5))
    assert len(removed) == 100
    rules = f"  - layer: fc1\n    remove: {removed}\n"
    rebuilt, _ = assert_prunes_exactly(model, rules, {"fc2": removed}, {"fc1": 412, "fc2": 10})
    expected = reference.hand_sliced_dense_pair(model, "fc1", "fc2", removed)
    for name in ("fc1", "fc2"):
        for got, want in zip(rebuilt.get_layer(name).get_weights(), expected[name]):
            np.testing.assert_array_equal(got, want)


def test_seed_conv_filters_drop_every_flatten_position():
    model = models.mnist_cnn()
    removed = [0, 7, 63]
    keep = [c for c in range(64) if c not in removed]
    flat_removed = [p * 64 + c for p in range(49) for c in removed]
    rebuilt, _ = assert_prunes_exactly(model, f"  - layer: conv2\n    remove: {removed}\n",
                                       {"fc1": flat_removed}, {"conv2": 61, "flatten": 49 * 61})
    kernel = model.get_layer("fc1").get_weights()[0].reshape(7, 7, 64, 512)[:, :, keep, :]
    np.testing.assert_array_equal(rebuilt.get_layer("fc1").get_weights()[0], kernel.reshape(-1, 512))


def test_keep_list_is_the_complement_of_remove():
    model = models.mnist_cnn()
    keep = list(range(0, 512, 2))
    removed = [i for i in range(512) if i not in keep]
    assert_prunes_exactly(model, f"  - layer: fc1\n    keep: {keep}\n", {"fc2": removed}, {"fc1": 256})


def test_concatenate_shifts_offsets_behind_the_removed_channel():
    model = models.concat_model()
    # conv_a has 6 channels, conv_b 5: conv_b's channel 1 sits at offset 6 + 1 in the concat.
    assert_prunes_exactly(model, "  - layer: conv_b\n    remove: [1]\n  - layer: conv_a\n    remove: [0, 5]\n",
                          {"conv_c": [0, 5, 7]}, {"conv_a": 4, "conv_b": 4, "concat": 8})


def test_add_couples_both_branches_through_batchnorm():
    model = models.add_bn_model()
    rebuilt, resolved = assert_prunes_exactly(model, "  - layer: conv_b\n    remove: [2, 6]\n",
                                              {"conv_c": [2, 6]}, {"conv_a": 6, "bn_a": 6, "conv_b": 6})
    (group,) = resolved.groups
    assert {m.layer: m.removed for m in group.members} == {"conv_a": (2, 6), "conv_b": (2, 6)}
    assert group.coupled_by == ("add",)
    bn = model.get_layer("bn_a")
    keep = [c for c in range(8) if c not in (2, 6)]
    for got, want in zip(rebuilt.get_layer("bn_a").weights, bn.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy()[keep])


def test_squeeze_excite_multiply_with_reshape():
    model = models.se_model()
    assert_prunes_exactly(model, "  - layer: conv\n    remove: [3]\n",
                          {"se_reduce": [3], "conv_out": [3]},
                          {"conv": 7, "se_reshape": 7, "se_expand": 7, "se_mul": 7})


def test_shared_layer_loses_the_channel_at_every_call():
    model = models.shared_layer_model()
    rebuilt, _ = assert_prunes_exactly(model, "  - layer: shared\n    remove: [4, 5]\n",
                                       {"head": [4, 5]}, {"add": 10})
    assert rebuilt.get_layer("shared").units == 10


def test_shared_layer_with_two_heads():
    model = models.shared_layer_two_heads_model()
    assert_prunes_exactly(model, "  - layer: shared\n    remove: [0]\n",
                          {"head_a": [0], "head_b": [0]}, {"head_a": 3})


@pytest.mark.parametrize("factory", [models.nested_model, models.nested_functional_model])
def test_nested_model_by_path(factory):
    model = factory()
    assert_prunes_exactly(model, "  - layer: backbone/conv1\n    remove: [2, 3]\n",
                          {"backbone/conv2": [2, 3]}, {"backbone/conv1": 6})


def test_nested_conv_feeding_flatten_outside():
    model = models.nested_model()
    flat = [p * 6 + 4 for p in range(64)]
    assert_prunes_exactly(model, "  - layer: backbone/conv2\n    remove: [4]\n",
                          {"head": flat}, {"backbone/conv2": 5, "flatten": 64 * 5})


def test_multi_output_trunk():
    model = models.multi_output_model()
    assert_prunes_exactly(model, "  - layer: trunk\n    remove: [0, 15]\n",
                          {"out_a": [0, 15], "out_b": [0, 15]}, {"trunk": 14, "out_a": 2, "out_b": 3})


def test_raw_keras_ops_couple_like_add():
    model = models.raw_ops_model()
    _, resolved = assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [1]\n",
                                        {"conv_c": [1]}, {"conv_a": 5, "conv_b": 5})
    (group,) = resolved.groups
    assert {m.layer: m.removed for m in group.members} == {"conv_a": (1,), "conv_b": (1,)}


def test_multi_input_concat():
    model = models.multi_input_model()
    assert_prunes_exactly(model, "  - layer: fb\n    remove: [0, 7]\n", {"fc": [8, 15]}, {"fb": 6, "cat": 14})


def test_lambda_elsewhere_is_left_untouched():
    model = models.lambda_elsewhere_model()
    assert_prunes_exactly(model, "  - layer: fc1\n    remove: [5]\n", {"head": [5]}, {"fc1": 7})


def test_plan_counts_params_and_flops_exactly():
    model = models.mnist_cnn()
    resolved = plan(build_graph(model), spec_of("  - layer: fc1\n    remove: [0, 1]\n"))
    assert resolved.params == (model.count_params(), model.count_params() - 2 * (3136 + 1) - 2 * 10)
    fc1 = next(c for c in resolved.layers if c.path == "fc1")
    assert fc1.flops == (2 * 3136 * 512, 2 * 3136 * 510)
    assert fc1.output_shape == ((None, 512), (None, 510))


# -- refusals: one clear error, naming rule, layer and location ---------------------------------

def test_index_out_of_range_names_the_valid_range():
    text = refusal(models.mnist_cnn(), "  - layer: fc1\n    remove: [3, 600]\n")
    assert text == ("spec.yaml:4:17: rule 1 (layer 'fc1'): index 600 is out of range for 'fc1' "
                    "(Dense, 512 channels) (hint: valid range 0..511)")


def test_removing_every_channel_is_refused():
    text = refusal(models.multi_output_model(), f"  - layer: trunk\n    remove: {list(range(16))}\n")
    assert "removes every channel of 'trunk' (16 of 16)" in text


def test_unknown_layer_suggests_the_closest_names():
    text = refusal(models.mnist_cnn(), "  - layer: fc_1\n    remove: [1]\n")
    assert text == "spec.yaml:3:12: rule 1 (layer 'fc_1'): no layer is named 'fc_1' (hint: closest: 'fc1', 'fc2')"


def test_output_layer_is_refused():
    text = refusal(models.mnist_cnn(), "  - layer: fc2\n    remove: [1]\n")
    assert "cannot remove channel 1 of 'fc2': it reaches model output 'fc2'" in text


def test_conflicting_rules_on_one_coupled_group_name_both():
    text = refusal(models.add_bn_model(), "  - layer: conv_a\n    remove: [1]\n  - layer: conv_b\n    remove: [2]\n")
    assert "rule 2 (layer 'conv_b') conflicts with rule 1 (layer 'conv_a')" in text
    assert "coupled by 'add'" in text


def test_a_later_rule_cannot_remove_what_an_earlier_rule_kept():
    text = refusal(models.add_bn_model(), "  - layer: conv_a\n    remove: [1]\n  - layer: conv_b\n    remove: [1, 2]\n")
    assert text == ("spec.yaml:5:5: rule 2 (layer 'conv_b') conflicts with rule 1 (layer 'conv_a') on "
                    "channel 2 of 'conv_a' (coupled by 'add'): rule 2 removes it, rule 1 keeps it "
                    "(a remove list keeps every channel it does not list) (hint: merge the rules on "
                    "one layer into one rule, or 'exclude' the layer from one of them; coupled "
                    "layers need the same channels)")


def test_agreeing_rules_on_one_coupled_group_are_fine():
    model = models.add_bn_model()
    resolved = plan(build_graph(model), spec_of("  - layer: conv_a\n    remove: [1]\n  - layer: conv_b\n    remove: [1]\n"))
    assert [g.rules for g in resolved.groups] == [(1, 2)]


def test_lambda_on_the_path_is_named_with_the_path():
    text = refusal(models.lambda_model(), "  - layer: fc1\n    remove: [1]\n")
    assert "it is read by 'lam' (Lambda), and prunec has no rule for Lambda (path: fc1 -> lam)" in text


def test_criterion_removes_the_lowest_magnitude_channels():
    model = models.multi_output_model()
    kernel, bias = model.get_layer("trunk").get_weights()
    readers = [model.get_layer(n).get_weights()[0] for n in ("out_a", "out_b")]
    score = np.abs(kernel).sum(0) + np.abs(bias) + sum(np.abs(k).sum(1) for k in readers)
    expected = sorted(np.argsort(score, kind="stable")[:4].tolist())
    resolved = plan(build_graph(model), spec_of("  - layer: trunk\n    fraction: 0.25\n"))
    (group,) = resolved.groups
    assert [m[:2] for m in group.members] == [("trunk", tuple(expected))]


def test_nested_functional_with_two_outputs_feeding_a_concatenate():
    inner_in = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="d1")(inner_in)
    inner = keras.Model(inner_in, [keras.layers.Dense(4, name="o1")(hidden),
                                   keras.layers.Dense(5, name="o2")(hidden)], name="inner")
    x = keras.Input((6,))
    a, b = inner(x)
    y = keras.layers.Dense(3, name="head")(keras.layers.Concatenate(name="cat")([a, b]))
    model = keras.Model(x, y)
    # o2's channel 1 sits at offset 4 + 1 of the concatenation.
    assert_prunes_exactly(model, "  - layer: inner/o2\n    remove: [1]\n  - layer: inner/d1\n    remove: [0]\n",
                          {"head": [5], "inner/o1": [0], "inner/o2": [0]}, {"inner/o2": 4, "cat": 8})
