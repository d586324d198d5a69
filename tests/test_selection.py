"""Selecting layers across a family and sizing what a criterion keeps.

``type`` (a Keras class name, matched along the MRO), ``layer`` globs, ``exclude``, ``optional``;
``round_to`` and ``min_keep``; criteria that score a coupled group as the sum over all of its
members and resolve it once however many selected layers share it. Expected channels are computed
here from the weights, independently of ``plan.py``.
"""

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

import models
from compiler.api import apply, build_graph, load_spec, plan
from compiler.errors import ConstraintError
from exactness import assert_params_counted, spec_of

SPECS = Path(__file__).resolve().parent.parent / "specs"


def plan_of(model, rules: str):
    return plan(build_graph(model), spec_of(rules))


def removed_by_layer(resolved) -> dict[str, tuple[int, ...]]:
    return {owner: indices for group in resolved.groups for owner, indices, _ in group.members}


def kept_filters(resolved, path: str) -> int:
    (change,) = [c for c in resolved.layers if c.path == path]
    return change.output_shape[1][-1]


def ladder(widths=(20, 16, 12), seed: int = 0) -> keras.Model:
    """image -> conv_0 (20) -> conv_1 (16) -> sep_2 (12, separable) -> pool -> head (2)."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((6, 6, 3), name="image")
    y = layers.Conv2D(widths[0], 3, padding="same", name="conv_0")(x)
    y = layers.Conv2D(widths[1], 3, padding="same", name="conv_1")(y)
    y = layers.SeparableConv2D(widths[2], 3, padding="same", name="sep_2")(y)
    y = layers.Dense(2, name="head")(layers.GlobalAveragePooling2D(name="pool")(y))
    return keras.Model(x, y, name="ladder")


# -- choosing layers ----------------------------------------------------------------------------

def test_type_selects_every_layer_of_the_class_and_its_subclasses():
    resolved = plan_of(ladder(), "  - type: Conv2D\n    fraction: 0.25\n")
    assert set(removed_by_layer(resolved)) == {"conv_0", "conv_1"}
    assert (kept_filters(resolved, "conv_0"), kept_filters(resolved, "conv_1")) == (15, 12)
    base = plan_of(ladder(), "  - type: BaseConv\n    fraction: 0.25\n")   # a base class in the MRO
    assert removed_by_layer(base) == removed_by_layer(resolved)


def test_type_and_glob_combine_and_exclude_leaves_layers_alone():
    resolved = plan_of(ladder(), "  - type: Conv2D\n    layer: 'conv_*'\n    exclude: ['*_1']\n"
                                 "    count: 2\n")
    assert set(removed_by_layer(resolved)) == {"conv_0"}
    glob_only = plan_of(ladder(), "  - layer: '*_[02]'\n    count: 2\n")
    assert set(removed_by_layer(glob_only)) == {"conv_0", "sep_2"}


def test_a_rule_that_selects_nothing_is_an_error_that_says_how_to_allow_it():
    with pytest.raises(ConstraintError) as caught:
        plan_of(ladder(), "  - type: GRU\n    fraction: 0.5\n")
    assert str(caught.value).startswith(
        "spec.yaml:3:11: rule 1 (type GRU): no layer of type 'GRU' (hint: types here: ")
    assert str(caught.value).endswith("; add 'optional: true' if the rule may match nothing)")
    with pytest.raises(ConstraintError) as caught:      # a Keras class name in the wrong case
        plan_of(ladder(), "  - type: conv2d\n    fraction: 0.5\n")
    assert str(caught.value) == ("spec.yaml:3:11: rule 1 (type conv2d): no layer of type 'conv2d' "
                                 "(hint: closest: 'Conv2D'; types are case-sensitive Keras class "
                                 "names)")
    with pytest.raises(ConstraintError) as caught:
        plan_of(ladder(), "  - type: Conv2D\n    layer: 'sep*'\n    fraction: 0.5\n")
    assert "rule 1 (layer 'sep*', type Conv2D): no layer matches 'sep*' of type 'Conv2D'" in str(caught.value)


def test_a_layer_named_like_a_glob_is_selected_by_its_own_name():
    x = keras.Input((4,))
    odd = layers.Dense(6, name="a[1]?")(x)
    model = keras.Model(x, layers.Dense(2, name="head")(layers.Dense(5, name="a1x")(odd)))
    resolved = plan_of(model, "  - layer: 'a[1]?'\n    remove: [0, 2]\n")
    assert removed_by_layer(resolved) == {"a[1]?": (0, 2)}       # the exact name, not 'a1x'
    assert removed_by_layer(plan_of(model, "  - layer: 'a?x'\n    remove: [1]\n")) == {"a1x": (1,)}
    excluded = plan_of(model, "  - type: Dense\n    exclude: ['a[1]?', head]\n    remove: [1]\n")
    assert removed_by_layer(excluded) == {"a1x": (1,)}
    with pytest.raises(ConstraintError) as caught:
        plan_of(model, "  - layer: 'a[1]?y'\n    remove: [0]\n")
    assert str(caught.value) == ("spec.yaml:3:12: rule 1 (layer 'a[1]?y'): no layer matches "
                                 "'a[1]?y' (hint: closest: 'a[[]1][?]')")


def test_optional_rule_that_selects_nothing_is_skipped():
    resolved = plan_of(ladder(), "  - type: Conv3D\n    fraction: 0.5\n    optional: true\n"
                                 "  - layer: conv_1\n    remove: [0]\n")
    assert removed_by_layer(resolved) == {"conv_1": (0,)}


# -- how many channels a criterion keeps ----------------------------------------------------------

@pytest.mark.parametrize("rule, kept", [
    ("fraction: 0.25", 15),                       # 20 - floor(5)
    ("fraction: 0.25\n    round_to: 8", 16),      # 15 rounded up to a multiple of 8
    ("fraction: 0.5\n    round_to: 8", 16),       # 10 -> 16
    ("fraction: 0.9\n    min_keep: 4", 4),        # 2 raised to 4
    ("fraction: 0.9\n    min_keep: 3\n    round_to: 4", 4),
    ("count: 19\n    min_keep: 6", 6),
    ("fraction: 0.5\n    round_to: 32\n    optional: true", 20),   # never more than the layer has
])
def test_round_to_and_min_keep_bound_the_kept_count(rule, kept):
    resolved = plan_of(ladder(), f"  - layer: conv_0\n    {rule}\n")
    assert kept_filters(resolved, "conv_0") == kept


def test_round_to_keeps_every_layer_of_a_type_a_multiple():
    resolved = plan_of(ladder((20, 24, 12)), "  - type: Conv2D\n    fraction: 0.4\n    round_to: 8\n")
    assert (kept_filters(resolved, "conv_0"), kept_filters(resolved, "conv_1")) == (16, 16)


@pytest.mark.parametrize("rule, why", [
    ("fraction: 0.5\n    round_to: 32", "round_to 32 keeps all of its 20 channels"),
    ("fraction: 0.5\n    min_keep: 24\n    round_to: 4", "min_keep 24 and round_to 4 keep all of "
     "its 20 channels"),
    ("fraction: 0.04", "fraction 0.04 of its 20 channels rounds down to none"),
])
def test_a_criterion_rule_that_removes_nothing_says_why(rule, why):
    resolved = plan_of(ladder(), f"  - layer: conv_0\n    {rule}\n    optional: true\n")
    assert resolved.groups == ()
    assert resolved.notes == (f"rule 1 (layer 'conv_0'): left 'conv_0' alone: {why}",)


# -- criteria on coupled groups -------------------------------------------------------------------

def l1_of_add_bn_groups(model) -> np.ndarray:
    """Per channel of the add: every trainable weight that removing it deletes, summed."""
    w = {name: model.get_layer(name).get_weights() for name in ("conv_a", "bn_a", "conv_b", "conv_c")}
    (ka, ba), (kb, bb), (kc, _) = w["conv_a"], w["conv_b"], w["conv_c"]
    gamma, beta = w["bn_a"][:2]
    return (np.abs(ka).sum((0, 1, 2)) + np.abs(ba) + np.abs(gamma) + np.abs(beta)
            + np.abs(kb).sum((0, 1, 2)) + np.abs(bb) + np.abs(kc).sum((0, 1, 3)))


def test_criterion_scores_a_coupled_group_over_all_its_members():
    model = models.add_bn_model()
    expected = tuple(sorted(np.argsort(l1_of_add_bn_groups(model), kind="stable")[:2].tolist()))
    resolved = plan_of(model, "  - layer: conv_b\n    fraction: 0.25\n")
    assert removed_by_layer(resolved) == {"conv_a": expected, "conv_b": expected}


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_l1_and_l2_rank_by_their_own_norm(criterion):
    """Unit 0 has many small weights, unit 1 one large one: L1 and L2 disagree on which is least."""
    x = keras.Input((6,), name="features")
    model = keras.Model(x, layers.Dense(2, name="head")(layers.Dense(4, name="fc")(x)))
    kernel = np.full((6, 4), 3.0, dtype="float32")
    kernel[:, 0] = 0.5
    kernel[:, 1] = [2.0, 0, 0, 0, 0, 0]
    model.get_layer("fc").set_weights([kernel, np.zeros(4, "float32")])
    head = np.full((4, 2), 0.1, dtype="float32")
    model.get_layer("head").set_weights([head, np.zeros(2, "float32")])
    # what removing unit c deletes: fc's kernel column and bias c, and head's kernel row c
    deleted = np.concatenate([kernel, np.zeros((1, 4)), head.T], axis=0)
    norms = {"l1": np.abs(deleted).sum(0), "l2": np.sqrt((deleted ** 2).sum(0))}
    assert np.argmin(norms["l1"]) != np.argmin(norms["l2"])
    resolved = plan_of(model, f"  - layer: fc\n    count: 1\n    criterion: {criterion}\n")
    assert removed_by_layer(resolved) == {"fc": (int(np.argmin(norms[criterion])),)}


def test_one_rule_over_several_members_of_a_group_resolves_it_once():
    model = models.add_bn_model()
    resolved = plan_of(model, "  - type: Conv2D\n    fraction: 0.25\n    exclude: [conv_c]\n")
    (group,) = resolved.groups
    assert group.rules == (1,)
    assert [len(m.removed) for m in group.members] == [2, 2]     # 25% of 8, not twice


def test_criterion_leaves_fixed_groups_alone_with_a_note():
    resolved = plan_of(models.multi_output_model(), "  - type: Dense\n    fraction: 0.5\n")
    removed = removed_by_layer(resolved)
    assert set(removed) == {"trunk"} and len(removed["trunk"]) == 8
    assert sorted(resolved.notes) == [
        "rule 1 (type Dense): left 'out_a' alone: it reaches model output 'out_a' (removing it would "
        "change the model's interface)",
        "rule 1 (type Dense): left 'out_b' alone: it reaches model output 'out_b' (removing it would "
        "change the model's interface)"]


def test_min_keep_wider_than_the_layer_keeps_every_channel():
    resolved = plan_of(ladder(), "  - layer: conv_0\n    fraction: 0.5\n    min_keep: 24\n    optional: true\n")
    assert resolved.groups == ()


def test_l1_sums_a_consumer_over_every_flatten_position():
    x = keras.Input((2, 2, 1), name="x")
    c = layers.Conv2D(3, 1, use_bias=False, name="conv")(x)
    y = layers.Dense(1, use_bias=False, name="head")(layers.Flatten(name="flat")(c))
    model = keras.Model(x, y)
    model.get_layer("conv").set_weights([np.ones((1, 1, 1, 3), "float32")])
    rows = np.array([[10, 10, 10, 0.1], [1, 1, 1, 1], [2, 2, 2, 2]], "float32")  # channel x position
    model.get_layer("head").set_weights([rows.T.reshape(12, 1)])                    # index p*3+c
    expected = 1 + rows.sum(1)
    resolved = plan_of(model, "  - layer: conv\n    count: 1\n")
    assert [m[:2] for g in resolved.groups for m in g.members] == [("conv", (int(np.argmin(expected)),))]


# -- the checked-in family spec -------------------------------------------------------------------------

def test_family_spec_selects_by_type_and_is_optional_everywhere():
    spec = load_spec(SPECS / "family_25.yaml")
    assert [(r.type, r.fraction, r.optional, r.layer) for r in spec.rules] == [
        ("Conv2D", 0.25, True, None), ("SeparableConv2D", 0.25, True, None), ("Dense", 0.25, True, None)]


def test_one_rebuild_however_many_rules(monkeypatch):
    model = ladder()
    calls = []
    original = keras.models.clone_model

    def counting(cloned, *args, **kwargs):
        calls.append(cloned.name)
        return original(cloned, *args, **kwargs)

    monkeypatch.setattr(keras.models, "clone_model", counting)
    rules = "".join(f"  - layer: {name}\n    count: 1\n" for name in ("conv_0", "conv_1", "sep_2"))
    rebuilt, resolved, _ = apply(spec_of(rules), model, check=False)
    assert_params_counted(resolved, model, rebuilt)
    assert calls == ["ladder"] and len(resolved.groups) == 3
    assert [rebuilt.get_layer(n).output.shape[-1] for n in ("conv_0", "conv_1", "sep_2")] == [19, 15, 11]
