"""Global targets: the lowest LAMP-ranked channels go until FLOPs (params) meet the target."""

import keras
import numpy as np
import pytest
from keras import layers

from compiler import api
from compiler.budget import normalise
from compiler.errors import CompilerError
from compiler.spec import parse_spec


def chain(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((12, 12, 1)),
        layers.Conv2D(8, 3, activation="relu", name="c1"),
        layers.Conv2D(12, 3, activation="relu", name="c2"),
        layers.MaxPooling2D(name="pool"),
        layers.Flatten(name="flat"),
        layers.Dense(16, activation="relu", name="d1"),
        layers.Dense(4, name="out")])


def flops(counts):
    """2 x MACs of chain() with (c1, c2, d1) channels, by hand."""
    c1, c2, d1 = counts
    return 2 * (10 * 10 * 9 * 1 * c1 + 8 * 8 * 9 * c1 * c2 + 4 * 4 * c2 * d1 + d1 * 4)


def params(counts):
    c1, c2, d1 = counts
    return (9 * c1 + c1) + (9 * c1 * c2 + c2) + (16 * c2 * d1 + d1) + (d1 * 4 + 4)


def l1_scores(model):
    """Per layer, per channel: |producer slice| + |bias| + |consumer slice|, in numpy."""
    w = {name: [v.numpy().astype(np.float64) for v in model.get_layer(name).weights]
         for name in ("c1", "c2", "d1", "out")}
    c1 = np.abs(w["c1"][0]).sum((0, 1, 2)) + np.abs(w["c1"][1]) + np.abs(w["c2"][0]).sum((0, 1, 3))
    rows = np.abs(w["d1"][0]).sum(1).reshape(16, 12).sum(0)        # flat index = position*C + c
    c2 = np.abs(w["c2"][0]).sum((0, 1, 2)) + np.abs(w["c2"][1]) + rows
    d1 = np.abs(w["d1"][0]).sum(0) + np.abs(w["d1"][1]) + np.abs(w["out"][0]).sum(1)
    return {"c1": c1, "c2": c2, "d1": d1}


def counts_of(resolved, sizes=(8, 12, 16)):
    removed = {m.layer: len(m.removed) for g in resolved.groups for m in g.members}
    return [size - removed.get(name, 0) for name, size in zip(("c1", "c2", "d1"), sizes)]


SPEC = "version: 1\ntarget: {%s: %s}\nprune:\n  - type: Conv2D\n  - layer: d1\n"


def test_lamp_normalisation_by_hand():
    np.testing.assert_allclose(normalise(np.array([3.0, 1.0, 2.0])), [1.0, 1 / 14, 4 / 13])
    np.testing.assert_allclose(normalise(np.array([3.0, 1.0, 2.0]), "layer"), [1.5, 0.5, 1.0])


@pytest.mark.parametrize("measure, fraction", [("flops", 0.5), ("flops", 0.3), ("params", 0.6)])
def test_target_lands_just_below_and_drops_the_lowest_lamp_scores(measure, fraction):
    model = chain()
    resolved = api.plan(model, parse_spec(SPEC % (measure, fraction), "s.yaml"))
    count = flops if measure == "flops" else params
    full, kept = count((8, 12, 16)), counts_of(resolved)
    assert (resolved.flops if measure == "flops" else resolved.params) == (full, count(kept))
    assert count(kept) <= fraction * full
    # one channel fewer removed anywhere it removed some would miss the target
    assert any(count([k + (i == j) for i, k in enumerate(kept)]) > fraction * full
               for j in range(3) if kept[j] < (8, 12, 16)[j])
    # every removed channel ranks (LAMP of numpy L1 norms) at or below every kept one
    scores = l1_scores(model)
    removed = {m.layer: set(m.removed) for g in resolved.groups for m in g.members}
    lamp = {name: normalise(s) for name, s in scores.items()}
    gone = [lamp[n][i] for n in lamp for i in removed.get(n, ())]
    stay = [lamp[n][i] for n in lamp for i in range(len(lamp[n])) if i not in removed.get(n, ())]
    assert max(gone) <= min(stay)
    assert resolved.budget["after"] == count(kept) and resolved.budget["before"] == full
    assert any(note.startswith(f"target {measure} {fraction:g}: {full} -> {count(kept)}")
               for note in resolved.notes)


def test_min_keep_and_round_to_hold_under_a_target():
    spec = ("version: 1\ntarget: {flops: 0.3}\nprune:\n  - type: Conv2D\n    round_to: 4\n"
            "    min_keep: 4\n  - layer: d1\n    min_keep: 10\n")
    resolved = api.plan(chain(), parse_spec(spec, "s.yaml"))
    c1, c2, d1 = counts_of(resolved)
    assert c1 % 4 == 0 and c2 % 4 == 0 and c1 >= 4 and c2 >= 4 and d1 >= 10
    assert flops((c1, c2, d1)) <= 0.3 * flops((8, 12, 16))


def test_rules_with_their_own_amount_are_kept_out_of_the_ranking():
    spec = "version: 1\ntarget: {flops: 0.5}\nprune:\n  - layer: c1\n    remove: [0, 1]\n  - layer: c2\n  - layer: d1\n"
    resolved = api.plan(chain(), parse_spec(spec, "s.yaml"))
    removed = {m.layer: m.removed for g in resolved.groups for m in g.members}
    assert removed["c1"] == (0, 1)
    assert flops(counts_of(resolved)) <= 0.5 * flops((8, 12, 16))


def test_an_unreachable_target_is_a_one_line_error():
    spec = "version: 1\ntarget: {flops: 0.01}\nprune:\n  - layer: d1\n"
    with pytest.raises(CompilerError) as error:
        api.plan(chain(), parse_spec(spec, "s.yaml"))
    assert str(error.value).startswith("s.yaml:2:9: target flops 0.01 cannot be reached: removing "
                                       "every channel the rules allow leaves 0.")


def test_target_spec_errors():
    with pytest.raises(CompilerError) as error:
        parse_spec("version: 1\ntarget: {flops: 0.5, params: 0.5}\nprune:\n  - layer: d1\n", "s.yaml")
    assert str(error.value) == ("s.yaml:2:9: give exactly one of flops, params (found: flops, "
                                "params) (hint: e.g. target: {flops: 0.5})")
    with pytest.raises(CompilerError, match="every rule gives its own amount, so the target ranks nothing"):
        parse_spec("version: 1\ntarget: {flops: 0.5}\nprune:\n  - layer: d1\n    count: 1\n", "s.yaml")
