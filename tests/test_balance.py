"""Criterion rules and targets choose within balances: equal ``ops.split`` sections keep as many
channels each, also after a channel shuffle (where a group sits at two positions of the split).

Which reader sees which channel is tracked here by hand (``reads``: per channel-mixing layer, the
producer channel at each input position), never by prunec; the zeroed reference, the balance of
every split and the expected channels all come from that and from the weights."""

import re

import keras
import numpy as np
import pytest
from keras import layers, ops

from breadth import assert_prunes_exactly, model_of, refusal, spec_of
from compiler.api import build_graph, parse_spec, plan
from test_shuffle_ops import raw_shuffle, unit
from test_splits import split_model


def removed_channels(resolved) -> set:
    return {(m.layer, j) for g in resolved.groups for m in g.members for j in m.removed}


def zero_map(reads: dict, removed: set) -> dict:
    """Per reader, the input positions that carry a removed channel."""
    zero = {reader: [p for p, channel in enumerate(channels) if channel in removed]
            for reader, channels in reads.items()}
    return {reader: positions for reader, positions in zero.items() if positions}


def section_losses(sections, removed: set) -> list[int]:
    return [sum(channel in removed for channel in section) for section in sections]


def shuffled(channels: list, groups: int) -> list:
    """Position ``j*g + i`` of the shuffle carries group ``i``'s index ``j``."""
    n = len(channels) // groups
    return [channels[i * n + j] for j in range(n) for i in range(groups)]


def split_reads():
    conv_a = [("conv_a", c) for c in range(8)]
    reads = {"conv_0": conv_a[:4], "conv_1": conv_a[4:],
             "head": [("conv_0", j) for j in range(3)] + [("conv_1", j) for j in range(3)]}
    return reads, [conv_a[:4], conv_a[4:]]


def l1_of_conv_a(model) -> np.ndarray:
    """What removing conv_a's channel c deletes: its kernel column and bias, and the kernel row
    of the section's reader (conv_0 for 0-3, conv_1 for 4-7)."""
    kernel, bias = (w.numpy() for w in model.get_layer("conv_a").weights)
    rows = [np.abs(model.get_layer(f"conv_{i}").kernel.numpy()).sum((0, 1, 3)) for i in (0, 1)]
    return np.abs(kernel).sum((0, 1, 2)) + np.abs(bias) + np.concatenate(rows)


def lopsided_split_model():
    """split_model(2) whose channels 0 and 1 (both in section 0) have the smallest weights."""
    model = split_model(2)
    conv_a = model.get_layer("conv_a")
    kernel, bias = (w.numpy() for w in conv_a.weights)
    kernel[..., :2] *= 0.01
    bias[:2] *= 0.01
    conv_a.set_weights([kernel, bias])
    return model


def test_a_fraction_takes_the_lowest_channels_of_each_equal_section():
    model = lopsided_split_model()
    scores = l1_of_conv_a(model)
    assert sorted(np.argsort(scores)[:2].tolist()) == [0, 1]    # unsteered: both in section 0
    expected = {("conv_a", int(np.argmin(scores[:4]))), ("conv_a", 4 + int(np.argmin(scores[4:])))}
    rules = "  - layer: conv_a\n    fraction: 0.25\n"
    resolved = plan(build_graph(model), spec_of(rules))
    assert removed_channels(resolved) == expected
    reads, _ = split_reads()
    assert_prunes_exactly(model, rules, zero_map(reads, expected))


def test_an_amount_the_sections_cannot_share_is_rounded_down_with_a_note():
    model = lopsided_split_model()
    rules = "  - layer: conv_a\n    fraction: 0.375\n"          # 3 of 8: an odd number
    resolved = plan(build_graph(model), spec_of(rules))
    removed = removed_channels(resolved)
    reads, sections = split_reads()
    assert section_losses(sections, removed) == [1, 1]
    notes = [re.sub(r"'split_\d+'", "'split'", note) for note in resolved.notes]
    assert "rule 1 (layer 'conv_a'): removes 2 of 8 channels of 'conv_a', not 3: the 2 equal " \
           "sections of 'split' (Split) must keep as many channels each" in notes
    assert_prunes_exactly(model, rules, zero_map(reads, removed))


@pytest.mark.parametrize("amount, per_section", [
    ("count: 5", 1),                   # 5 asked, 3 sections: 3 go
    ("count: 3\n    round_to: 3", 1),  # 9 kept: a multiple of 3 and of the sections
    ("count: 4\n    round_to: 4", 0),  # 8 kept asked; 3 or 6 removed would keep 9 or 6: none go
])
def test_the_sections_and_round_to_both_hold(amount, per_section):
    def build(x):
        a = layers.Conv2D(12, 1, name="conv_a")(x)
        parts = ops.split(a, 3, axis=-1)
        return layers.Concatenate(name="cat")(
            [layers.Conv2D(2, 1, name=f"conv_{i}")(p) for i, p in enumerate(parts)])
    resolved = plan(build_graph(model_of(build)),
                    spec_of(f"  - layer: conv_a\n    {amount}\n    optional: true\n"))
    removed = removed_channels(resolved)
    conv_a = [("conv_a", c) for c in range(12)]
    assert section_losses([conv_a[:4], conv_a[4:8], conv_a[8:]], removed) == [per_section] * 3


def test_a_named_layer_the_sections_leave_nothing_to_remove_is_one_line_error():
    text = refusal(lopsided_split_model(), "  - layer: conv_a\n    count: 1\n")
    assert re.sub(r"'split_\d+'", "'split'", text) == (
        "spec.yaml:4:12: rule 1 (layer 'conv_a'): removes nothing from 'conv_a': the 2 equal "
        "sections of 'split' (Split) must keep as many channels each, and no removal of at most 1 "
        "of its 8 channels does (hint: add 'optional: true' if the rule may remove nothing)")


def test_an_explicit_list_that_breaks_the_sections_is_still_refused():
    text = refusal(lopsided_split_model(), "  - layer: conv_a\n    remove: [0, 1]\n")
    assert re.sub(r"'split_\d+'", "'split'", text) == (
        "spec.yaml:4:13: rule 1 (layer 'conv_a'): at 'split' (Split): its 2 equal sections would "
        "become unequal (section 0 keeps 2 channels, section 1 keeps 4) (hint: remove the same "
        "number of channels from every section)")


def test_a_target_chooses_within_the_sections():
    model = lopsided_split_model()
    spec = parse_spec("version: 1\ntarget: {flops: 0.7}\nprune:\n  - type: Conv2D\n", "spec.yaml")
    resolved = plan(build_graph(model), spec)
    removed = removed_channels(resolved)
    reads, sections = split_reads()
    losses = section_losses(sections, removed)
    assert losses[0] == losses[1] > 0
    assert resolved.budget["after"] <= 0.7 * resolved.budget["before"]
    assert_prunes_exactly(model, spec, zero_map(reads, removed))


# -- ShuffleNet v2 in raw ops ---------------------------------------------------------------------
def shufflenet(units: int):
    """``units`` ShuffleNet-v2 units (ops.split in halves, 1x1 - dw 3x3 - BN - 1x1 on one half,
    ops.concatenate, raw-op shuffle of 2 groups) after an 8-channel stem, then a 1x1 conv; and
    the channel at each input position of every channel-mixing layer, and each split's sections."""
    def build(x):
        x = layers.Conv2D(8, 3, padding="same", name="stem")(x)
        for u in range(units):
            a, b = ops.split(x, 2, axis=-1)
            b = layers.Conv2D(4, 1, activation="relu", name=f"u{u}_conv1")(b)
            b = layers.DepthwiseConv2D(3, padding="same", name=f"u{u}_dw")(b)
            b = layers.BatchNormalization(name=f"u{u}_bn")(b)
            b = layers.Conv2D(4, 1, activation="relu", name=f"u{u}_conv2")(b)
            x = raw_shuffle(ops.concatenate([a, b], axis=-1), 2)
        return layers.Conv2D(3, 1, name="head_conv")(x)
    x = [("stem", c) for c in range(8)]
    reads, sections = {}, []
    for u in range(units):
        sections.append([x[:4], x[4:]])
        reads[f"u{u}_conv1"] = x[4:]
        reads[f"u{u}_conv2"] = [(f"u{u}_conv1", j) for j in range(4)]   # dw, BN: same channels
        x = shuffled(x[:4] + [(f"u{u}_conv2", j) for j in range(4)], 2)
    reads["head_conv"] = x
    reads["head"] = [("head_conv", j) for j in range(3)]
    return model_of(build), reads, sections


def test_a_fraction_of_every_conv_of_a_raw_op_shufflenet_unit_keeps_its_split_equal():
    model = unit()             # tests/test_shuffle_ops.py: ops.split, raw transpose shuffle
    for name in ("stem", "b_conv2", "head_conv"):   # make section 0's groups the smallest
        layer = model.get_layer(name)
        kernel, bias = (w.numpy() for w in layer.weights)
        if name == "stem":
            kernel[..., :4] *= 0.01
            bias[:4] *= 0.01
        else:
            kernel, bias = kernel * 0.01, bias * 0.01
        layer.set_weights([kernel, bias])
    rules = "  - type: Conv2D\n    fraction: 0.25\n"
    resolved = plan(build_graph(model), spec_of(rules))
    removed = removed_channels(resolved)
    stem = [("stem", c) for c in range(8)]
    assert section_losses([stem[:4], stem[4:]], removed) == [1, 1]
    a = stem[:4]
    reads = {"b_conv1": stem[4:], "b_conv2": [("b_conv1", j) for j in range(4)],
             "head_conv": shuffled(a + [("b_conv2", j) for j in range(4)], 2)}
    assert_prunes_exactly(model, rules, zero_map(reads, removed))


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_a_split_after_a_shuffle_sees_each_group_twice_and_stays_equal(fraction):
    model, reads, sections = shufflenet(2)
    rules = f"  - type: Conv2D\n    fraction: {fraction}\n"
    resolved = plan(build_graph(model), spec_of(rules))
    removed = removed_channels(resolved)
    for split in sections:
        losses = section_losses(split, removed)
        assert losses[0] == losses[1], (split, losses)
    stem = sum(1 for layer, _ in removed if layer == "stem")
    # unit 1's halves hold stem 0-1 (with unit 0's conv2 0-1) and stem 2-3 (with conv2 2-3),
    # each twice; unit 0's halves stem 0-3 and 4-7: a removal takes t of each pair and 2t of 4-7
    assert stem == {0.25: 0, 0.5: 4}[fraction]
    if fraction == 0.25:
        notes = [re.sub(r"'split_\d+'", "'split'", note) for note in resolved.notes]
        assert "rule 1 (type Conv2D): left 'stem' alone: the equal sections of 'split' and " \
               "'split' (Split) must keep as many channels each, and no removal of at most 2 of " \
               "its 8 channels does" in notes
        assert removed, "the other convs still lose channels"
    assert_prunes_exactly(model, rules, zero_map(reads, removed))


def test_an_explicit_list_that_breaks_a_raw_shufflenet_split_is_one_line_error():
    model, _, _ = shufflenet(1)
    text = refusal(model, "  - layer: stem\n    remove: [0, 1]\n")
    assert re.sub(r"'split_\d+'", "'split'", text) == (
        "spec.yaml:4:13: rule 1 (layer 'stem'): at 'split' (Split): its 2 equal sections would "
        "become unequal (section 0 keeps 2 channels, section 1 keeps 4) (hint: remove the same "
        "number of channels from every section)")


def test_two_rules_that_together_keep_a_balance_are_not_steered_apart():
    """One count rule per producer of a split's two sections: neither can even the split out
    alone, so the first is not steered to nothing; together they keep it equal."""
    def build(x):
        a = layers.Conv2D(4, 1, name="conv_a")(x)
        b = layers.Conv2D(4, 1, name="conv_b")(x)
        s0, s1 = ops.split(layers.Concatenate(name="cat")([a, b]), 2, axis=-1)
        return layers.Add(name="add")([layers.Conv2D(2, 1, name="r0")(s0),
                                       layers.Conv2D(2, 1, name="r1")(s1)])
    model = model_of(build)
    rules = "  - layer: conv_a\n    count: 1\n  - layer: conv_b\n    count: 1\n"
    removed = removed_channels(plan(build_graph(model), spec_of(rules)))
    assert sorted(layer for layer, _ in removed) == ["conv_a", "conv_b"]
    reads = {"r0": [("conv_a", c) for c in range(4)], "r1": [("conv_b", c) for c in range(4)]}
    assert_prunes_exactly(model, rules, zero_map(reads, removed))


def test_two_rules_on_a_bidirectional_s_two_directions():
    keras.utils.set_random_seed(0)
    x = keras.Input((5, 3))
    y = layers.Bidirectional(layers.LSTM(8), name="bi")(layers.Dense(6, name="pre")(x))
    model = keras.Model(x, layers.Dense(2, name="head")(y))
    both = plan(build_graph(model), spec_of("  - layer: 'bi/forward_lstm'\n    count: 2\n"
                                            "  - layer: 'bi/backward_lstm'\n    count: 2\n"))
    assert sorted(len(m.removed) for g in both.groups for m in g.members) == [2, 2]
    # the second rule asks for 3, and is steered to the 2 the first left in the other direction
    steered = plan(build_graph(model), spec_of("  - layer: 'bi/forward_lstm'\n    count: 2\n"
                                               "  - layer: 'bi/backward_lstm'\n    count: 3\n"))
    assert sorted(len(m.removed) for g in steered.groups for m in g.members) == [2, 2]
    assert any("removes 2 of 8 channels of 'bi/backward_lstm', not 3" in n for n in steered.notes)
