"""Cases found by a mutation pass over the compiler: each one fails under a plausible bug (a
changed line of emit, the layer rules, plan, scores, lock or verify) that the rest of the suite
missed. Expectations come from the independent oracle (``reference.zeroed_reads_model``) or from
numpy on the weights, never from prunec."""
import json

import keras
import numpy as np
import pytest
from keras import layers

import models
import reference
from compiler.api import apply, build_graph, emit, parse_spec, plan
from compiler.errors import ConstraintError, VerificationError
from compiler.artifacts import decisions_digest
from compiler.lock import spec_fingerprint
from compiler.verify import verify
from clirun import run
from test_locks import locked, spec  # noqa: F401  (fixtures)


def spec_of(text):
    return parse_spec("version: 1\nprune:\n" + text, "spec.yaml")


def exact(model, rules, zero, shapes):
    rebuilt, _, difference = apply(spec_of(rules), model)
    assert difference < 1e-4
    for path, n in shapes.items():
        assert reference.get_layer_by_path(rebuilt, path).output.shape[-1] == n
    x = reference.random_inputs(model)
    oracle = reference.zeroed_reads_model(model, zero)
    reference.assert_outputs_close(oracle, rebuilt, x)
    assert np.max(np.abs(np.asarray(model(x)) - np.asarray(oracle(x)))) > 1e-6


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.normal(0, 0.5, tuple(v.shape)).astype("float32"))
    return model


# -- mask mode --------------------------------------------------------------------------------------
def test_mask_mode_zeroes_exactly_the_entries_slicing_deletes():
    model = models.add_bn_model()
    spec = spec_of("  - layer: conv_a\n    remove: [1, 2]\n  - layer: conv_c\n    remove: [0]\n")
    masked, _, _ = apply(spec, model, mode="mask")
    gone = [1, 2]
    expected = {}
    for name in ("conv_a", "bn_a", "conv_b", "conv_c", "head"):
        expected[name] = [w.copy() for w in model.get_layer(name).get_weights()]
    for w in expected["conv_a"] + expected["conv_b"]:
        w[..., gone] = 0                    # kernel columns and biases
    for w in expected["bn_a"]:
        w[gone] = 0                         # gamma, beta, moving mean, moving variance
    kc, bc = expected["conv_c"]
    kc[:, :, gone, :] = 0                   # rows reading removed add channels
    kc[..., 0] = 0; bc[0] = 0               # conv_c's own removed filter
    expected["head"][0][0, :] = 0
    for name, weights in expected.items():
        for want, got in zip(weights, masked.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want, err_msg=name)


# -- layer rules ------------------------------------------------------------------------------------
def test_concatenate_with_positive_channel_axis_shifts_offsets():
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 3), name="image")
    a = layers.Conv2D(4, 3, padding="same", name="conv_a")(x)
    b = layers.Conv2D(4, 3, padding="same", name="conv_b")(x)
    c = layers.Concatenate(axis=3, name="cat")([a, b])
    c = layers.Conv2D(3, 1, name="conv_c")(c)
    y = layers.Dense(2, name="head")(layers.GlobalAveragePooling2D(name="gap")(c))
    model = randomize(keras.Model(x, y))
    exact(model, "  - layer: conv_b\n    remove: [1]\n", {"conv_c": [5]}, {"cat": 7, "conv_a": 4})


def test_multiply_by_a_broadcast_attention_map_couples_nothing():
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 3), name="image")
    f = layers.Conv2D(8, 3, padding="same", name="feat")(x)
    att = layers.Conv2D(1, 1, activation="sigmoid", name="att")(f)
    m = layers.Multiply(name="mul")([f, att])
    y = layers.Dense(2, name="head")(layers.GlobalAveragePooling2D(name="gap")(m))
    model = randomize(keras.Model(x, y))
    exact(model, "  - layer: feat\n    remove: [0, 3]\n", {"att": [0, 3], "head": [0, 3]},
          {"feat": 6, "att": 1, "mul": 6})


def test_reshape_to_one_flat_axis_drops_the_channel_at_every_position():
    keras.utils.set_random_seed(0)
    x = keras.Input((3, 3, 2), name="image")
    c = layers.Conv2D(4, 1, name="conv")(x)
    f = layers.Reshape((36,), name="flat")(c)
    y = layers.Dense(2, name="head")(f)
    model = randomize(keras.Model(x, y))
    exact(model, "  - layer: conv\n    remove: [1]\n", {"head": [p * 4 + 1 for p in range(9)]},
          {"flat": 27})


# -- plan -------------------------------------------------------------------------------------------
def test_min_keep_wider_than_the_layer_keeps_every_channel():
    from test_selection import ladder, plan_of
    resolved = plan_of(ladder(), "  - layer: conv_0\n    fraction: 0.5\n    min_keep: 24\n")
    assert resolved.groups == ()


def test_a_later_rule_cannot_remove_what_an_earlier_rule_kept():
    with pytest.raises(ConstraintError) as caught:
        plan(build_graph(models.add_bn_model()),
             spec_of("  - layer: conv_a\n    remove: [1]\n  - layer: conv_b\n    remove: [1, 2]\n"))
    assert "rule 2 (layer 'conv_b') conflicts with rule 1 (layer 'conv_a')" in str(caught.value)


# -- scores -----------------------------------------------------------------------------------------
def test_l1_sums_a_consumer_over_every_flatten_position():
    x = keras.Input((2, 2, 1), name="x")
    c = layers.Conv2D(3, 1, use_bias=False, name="conv")(x)
    y = layers.Dense(1, use_bias=False, name="head")(layers.Flatten(name="flat")(c))
    model = keras.Model(x, y)
    model.get_layer("conv").set_weights([np.ones((1, 1, 1, 3), "float32")])
    rows = np.array([[10, 10, 10, 0.1], [1, 1, 1, 1], [2, 2, 2, 2]], "float32")  # channel x position
    model.get_layer("head").set_weights([rows.T.reshape(12, 1)])                    # index p*3+c
    expected = 1 + rows.sum(1)
    resolved = plan(build_graph(model), spec_of("  - layer: conv\n    count: 1\n"))
    assert [m for g in resolved.groups for m in g.members] == [("conv", (int(np.argmin(expected)),))]


# -- locks ------------------------------------------------------------------------------------------
def test_spec_fingerprint_changes_with_the_criterion():
    base = "version: 1\nprune:\n  - layer: conv_c\n    fraction: 0.5\n"
    assert spec_fingerprint(parse_spec(base, "a.yaml")) != \
        spec_fingerprint(parse_spec(base + "    criterion: l2\n", "a.yaml"))


def test_a_lock_whose_flops_alone_were_edited_is_refused(locked, spec, add_bn_file, tmp_path, capsys):
    data = json.loads(locked.read_text())
    data["totals"]["flops"]["after"] -= 2
    data["decisions_sha256"] = decisions_digest(data)     # re-signed: only the totals check is left
    locked.write_text(json.dumps(data))
    out_path = tmp_path / "out.keras"
    code, out, err = run(capsys, "apply", spec, add_bn_file, "-o", out_path, "--locked")
    assert code == 1 and not out_path.exists() and "the lock's totals" in err


# -- verify -----------------------------------------------------------------------------------------
def test_verify_refuses_a_rebuild_that_outputs_nan():
    model = models.add_bn_model()
    resolved = plan(build_graph(model), spec_of("  - layer: conv_a\n    remove: [1]\n"))
    rebuilt = emit(model, resolved)
    kernel = rebuilt.get_layer("head").kernel
    kernel.assign(np.full(tuple(kernel.shape), np.nan, "float32"))
    with pytest.raises(VerificationError):
        verify(model, rebuilt, resolved)
