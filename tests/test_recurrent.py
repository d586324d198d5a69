"""Recurrent units as channels: LSTM, GRU, SimpleRNN, RNN(cell), Bidirectional, TimeDistributed, ConvLSTM.

The law for a unit: removing it must equal the original with the unit *unread*: its
``recurrent_kernel`` row zeroed (the only way the other units read it) and the input rows of every
downstream reader zeroed. Those copies are built by ``reference.zeroed_weights_model``, without
prunec code, and each is checked to differ from the original, so no test passes by accident. LSTM
and GRU are also checked against weights sliced by hand with numpy.
"""

import keras
import numpy as np
import pytest

import reference
from exactness import spec_of
from compiler.api import apply, format_plan, plan
from compiler.errors import ConstraintError
from compiler.verify import relative_difference

L = keras.layers



def randomized(model, scale=0.5):
    rng = np.random.default_rng(1)
    for v in model.weights:
        v.assign(rng.normal(0, scale, tuple(v.shape)).astype(v.dtype))
    return model


def weights(layer) -> dict[str, np.ndarray]:
    """By path in the layer; a rebuilt wrapper's inner layers may have paths that start at them."""
    prefix = layer.path + "/"
    return {v.path[len(prefix):] if v.path.startswith(prefix) else v.path: v.numpy()
            for v in layer.weights}


def prune(model, rules: str, zero: dict, x=None):
    """Apply ``rules``; the result must equal the zeroed copy ``zero``, which must differ from ``model``."""
    rebuilt, resolved, difference = apply(spec_of(rules), model)
    assert difference is not None and difference < 1e-4
    expected = reference.zeroed_weights_model(model, zero)
    x = reference.random_inputs(model) if x is None else x
    reference.assert_outputs_close(expected, rebuilt, x)
    assert relative_difference(model(x, training=False), expected(x, training=False)) > 1e-3
    assert resolved.params == (model.count_params(), rebuilt.count_params())
    return rebuilt, resolved


def gated(indices, units, gates):
    """Columns of units ``indices`` in every one of ``gates`` blocks of ``units``."""
    return [g * units + j for g in range(gates) for j in indices]


def stack(recurrent, steps=7, features=5, head=3):
    keras.utils.set_random_seed(0)
    x = keras.Input((steps, features), name="x")
    h = recurrent(L.Dense(6, name="proj")(x))
    return randomized(keras.Model(x, L.Dense(head, name="head")(h)))


# -- one layer ------------------------------------------------------------------------------------
def test_lstm_units_leave_every_gate_block_and_equal_hand_sliced_weights():
    model = stack(L.LSTM(8, name="lstm"))
    rebuilt, resolved = prune(model, "  - layer: lstm\n    remove: [1, 4]\n", {
        "lstm": {"lstm_cell/recurrent_kernel": (0, [1, 4])}, "head": {"kernel": (0, [1, 4])}})
    keep = [0, 2, 3, 5, 6, 7]
    columns = gated(keep, 8, 4)
    before, after = weights(model.get_layer("lstm")), weights(rebuilt.get_layer("lstm"))
    np.testing.assert_array_equal(after["lstm_cell/kernel"], before["lstm_cell/kernel"][:, columns])
    np.testing.assert_array_equal(after["lstm_cell/recurrent_kernel"],
                                  before["lstm_cell/recurrent_kernel"][keep][:, columns])
    np.testing.assert_array_equal(after["lstm_cell/bias"], before["lstm_cell/bias"][columns])
    np.testing.assert_array_equal(rebuilt.get_layer("head").kernel.numpy(),
                                  model.get_layer("head").kernel.numpy()[keep])
    assert rebuilt.get_layer("lstm").units == 6
    assert "lstm  removes 2 of 8  1,4" in format_plan(resolved)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_units_equal_hand_sliced_weights(reset_after):
    model = stack(L.GRU(6, reset_after=reset_after, name="gru"))
    rebuilt, _ = prune(model, "  - layer: gru\n    keep: [0, 2, 5]\n", {
        "gru": {"gru_cell/recurrent_kernel": (0, [1, 3, 4])}, "head": {"kernel": (0, [1, 3, 4])}})
    keep, columns = [0, 2, 5], gated([0, 2, 5], 6, 3)
    before, after = weights(model.get_layer("gru")), weights(rebuilt.get_layer("gru"))
    np.testing.assert_array_equal(after["gru_cell/kernel"], before["gru_cell/kernel"][:, columns])
    np.testing.assert_array_equal(after["gru_cell/recurrent_kernel"],
                                  before["gru_cell/recurrent_kernel"][keep][:, columns])
    np.testing.assert_array_equal(after["gru_cell/bias"], before["gru_cell/bias"][..., columns])
    assert after["gru_cell/bias"].shape == ((2, 9) if reset_after else (9,))


@pytest.mark.parametrize("make, cell", [
    (lambda: L.SimpleRNN(6, name="rnn"), "simple_rnn_cell"),
    (lambda: L.RNN(L.LSTMCell(6, name="cell"), name="rnn"), "cell"),
    (lambda: L.RNN(L.GRUCell(6, name="cell"), name="rnn"), "cell"),
    (lambda: L.RNN(L.SimpleRNNCell(6, name="cell"), name="rnn"), "cell"),
])
def test_simple_rnn_and_cells_inside_rnn(make, cell):
    model = stack(make())
    rebuilt, _ = prune(model, "  - layer: rnn\n    remove: [0, 3]\n", {
        "rnn": {f"{cell}/recurrent_kernel": (0, [0, 3])}, "head": {"kernel": (0, [0, 3])}})
    assert rebuilt.get_layer("rnn").output.shape[-1] == 4


def test_mask_mode_equals_slice_mode():
    model = stack(L.LSTM(8, name="lstm"))
    rules = spec_of("  - layer: lstm\n    remove: [2, 7]\n  - layer: proj\n    remove: [1]\n")
    sliced, resolved, _ = apply(rules, model)
    masked, _, _ = apply(rules, model, mode="mask")
    x = reference.random_inputs(model)
    reference.assert_outputs_close(sliced, masked, x)
    assert masked.count_params() == model.count_params()
    assert resolved.params == (model.count_params(), sliced.count_params())


# -- what feeds and what reads a recurrent layer ------------------------------------------------
@pytest.mark.parametrize("feed", ["dense", "conv1d", "time_distributed"])
def test_a_producer_feeding_a_recurrent_layer_prunes_like_one_feeding_a_dense(feed):
    keras.utils.set_random_seed(0)
    x = keras.Input((7, 5))
    producer = {"dense": L.Dense(6, name="feed"), "conv1d": L.Conv1D(6, 3, padding="same", name="feed"),
                "time_distributed": L.TimeDistributed(L.Dense(6, name="inner"), name="feed")}[feed]
    h = L.LSTM(4, name="lstm")(producer(x))
    model = randomized(keras.Model(x, L.Dense(2, name="head")(h)))
    prefix = "inner/" if feed == "time_distributed" else ""
    rebuilt, resolved = prune(model, "  - layer: feed\n    remove: [1, 5]\n", {
        "feed": {f"{prefix}kernel": (-1, [1, 5]), f"{prefix}bias": (0, [1, 5])}})
    assert rebuilt.get_layer("lstm").get_weights()[0].shape == (4, 16)
    if feed == "time_distributed":
        assert rebuilt.get_layer("feed").layer.units == 4


@pytest.mark.parametrize("reader", ["bidirectional", "bidirectional_cell", "rnn_cell", "time_distributed"])
def test_a_wrapper_whose_input_loses_channels_is_rebuilt_for_the_narrower_input(reader):
    """Keras serializes a wrapped layer with the input shape it was built for; that must not stick."""
    keras.utils.set_random_seed(0)
    x = keras.Input((7, 5))
    layer = {"bidirectional": lambda: L.Bidirectional(L.LSTM(3, name="lstm"), name="reader"),
             "bidirectional_cell": lambda: L.Bidirectional(L.RNN(L.GRUCell(3, name="cell"), name="rnn"),
                                                           name="reader"),
             "rnn_cell": lambda: L.RNN(L.LSTMCell(3, name="cell"), name="reader"),
             "time_distributed": lambda: L.TimeDistributed(L.Dense(3, name="inner"), name="reader")}[reader]
    h = layer()(L.Dense(6, name="proj")(x))
    if reader == "time_distributed":
        h = L.Flatten(name="flat")(h)
    model = randomized(keras.Model(x, L.Dense(2, name="head")(h)))
    prune(model, "  - layer: proj\n    remove: [2]\n", {"proj": {"kernel": (1, [2]), "bias": (0, [2])}})


def test_embedding_with_mask_zero_feeding_a_gru():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((9,), dtype="int32")
    e = L.Embedding(20, 8, mask_zero=True, name="embed")(tokens)
    h = L.GRU(6, name="gru")(e)
    model = randomized(keras.Model(tokens, L.Dense(2, name="head")(h)))
    ids = np.random.default_rng(0).integers(1, 20, (4, 9)).astype("int32")
    ids[:, 6:] = 0                                            # padded: masked time steps
    rebuilt, _ = prune(model, "  - layer: embed\n    remove: [0, 7]\n  - layer: gru\n    remove: [5]\n", {
        "embed": {"embeddings": (1, [0, 7])}, "gru": {"gru_cell/recurrent_kernel": (0, [5])},
        "head": {"kernel": (0, [5])}}, x=ids)
    assert rebuilt.get_layer("gru").units == 5


def test_masking_passes_channels_and_its_mask_reads_a_removed_one_as_absent():
    keras.utils.set_random_seed(0)
    x = keras.Input((7, 5))
    masking = L.Masking(name="masking")
    h = L.LSTM(4, name="lstm")(masking(L.Dense(6, name="proj")(x)))
    model = randomized(keras.Model(x, L.Dense(2, name="head")(h)))
    data = reference.random_inputs(model)
    data[:, 5:] = 0                                           # proj(0) = its bias: zero it too
    model.get_layer("proj").bias.assign(np.zeros(6, "float32"))
    rebuilt, _ = prune(model, "  - layer: proj\n    remove: [0, 4]\n",
                       {"proj": {"kernel": (1, [0, 4])}}, x=data)
    assert rebuilt.get_layer("lstm").get_weights()[0].shape == (4, 16)


def test_masking_with_another_mask_value_is_approximate():
    keras.utils.set_random_seed(0)
    x = keras.Input((7, 5))
    h = L.LSTM(4, name="lstm")(L.Masking(0.5, name="masking")(L.Dense(6, name="proj")(x)))
    model = randomized(keras.Model(x, L.Dense(2, name="head")(h)))
    with pytest.raises(ConstraintError) as caught:
        plan(model, spec_of("  - layer: proj\n    remove: [0]\n"))
    assert "Masking(mask_value=0.5) reads every channel to decide which time steps are masked" in str(caught.value)
    assert plan(model, spec_of("  - layer: proj\n    remove: [0]\n    exact: false\n")).approximate


def test_stacked_layers_return_state_and_go_backwards():
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 4))
    a = L.LSTM(8, return_sequences=True, name="first")(x)
    b = L.SimpleRNN(5, return_sequences=True, go_backwards=True, name="second")(a)
    out, h, c = L.LSTM(6, return_state=True, name="third")(b)
    y = L.Dense(3, name="head")(L.Concatenate(name="cat")([out, h, c]))
    model = randomized(keras.Model(x, y))
    rebuilt, _ = prune(model, "  - layer: first\n    remove: [0, 7]\n  - layer: second\n    remove: [2]\n"
                              "  - layer: third\n    remove: [1]\n", {
        "first": {"lstm_cell/recurrent_kernel": (0, [0, 7])},
        "second": {"simple_rnn_cell/kernel": (0, [0, 7]), "simple_rnn_cell/recurrent_kernel": (0, [2])},
        "third": {"lstm_cell/kernel": (0, [2]), "lstm_cell/recurrent_kernel": (0, [1])},
        "head": {"kernel": (0, [1, 7, 13])}})
    assert [rebuilt.get_layer(n).units for n in ("first", "second", "third")] == [6, 4, 5]


def test_initial_state_couples_encoder_and_decoder_units():
    keras.utils.set_random_seed(0)
    source, target = keras.Input((6, 4), name="source"), keras.Input((5, 3), name="target")
    _, h, c = L.LSTM(8, return_state=True, name="encoder")(source)
    decoded = L.LSTM(8, return_sequences=True, name="decoder")(target, initial_state=[h, c])
    model = randomized(keras.Model([source, target], L.Dense(2, name="head")(decoded)))
    rebuilt, resolved = prune(model, "  - layer: encoder\n    remove: [3]\n", {
        "encoder": {"lstm_cell/recurrent_kernel": (0, [3])},
        "decoder": {"lstm_cell/recurrent_kernel": (0, [3])}, "head": {"kernel": (0, [3])}})
    (group,) = resolved.groups
    assert [tuple(m) for m in group.members] == [("encoder", (3,), "outputs"), ("decoder", (3,), "outputs")]
    assert group.coupled_by == ("decoder",)
    assert rebuilt.get_layer("decoder").units == 7


def test_a_stateful_layer_stops_a_removal_naming_it():
    keras.utils.set_random_seed(0)
    x = keras.Input(batch_shape=(2, 5, 3))
    model = keras.Model(x, L.Dense(2, name="head")(L.LSTM(4, stateful=True, name="lstm")(x)))
    with pytest.raises(ConstraintError) as caught:
        plan(model, spec_of("  - layer: lstm\n    remove: [0]\n"))
    assert str(caught.value) == (
        "spec.yaml:4:13: rule 1 (layer 'lstm'): cannot remove channel 0 of 'lstm': it is produced by "
        "'lstm' (LSTM), and it is stateful (stateful=True): its state variables hold one entry per unit")


# -- Bidirectional --------------------------------------------------------------------------------
def bidirectional(merge_mode="concat", layer=None):
    keras.utils.set_random_seed(0)
    x = keras.Input((7, 5))
    h = L.Bidirectional(layer or L.LSTM(4, name="lstm"), merge_mode=merge_mode, name="bi")(x)
    return randomized(keras.Model(x, L.Dense(3, name="head")(h)))


def test_bidirectional_concat_outputs_forward_then_backward_units():
    model = bidirectional()
    rebuilt, resolved = prune(model, "  - layer: bi\n    remove: [0, 5]\n", {
        "bi": {"forward_lstm/lstm_cell/recurrent_kernel": (0, [0]),
               "backward_lstm/lstm_cell/recurrent_kernel": (0, [1])},
        "head": {"kernel": (0, [0, 5])}})
    bi = rebuilt.get_layer("bi")
    assert (bi.forward_layer.units, bi.backward_layer.units) == (3, 3)
    assert [tuple(m) for g in resolved.groups for m in g.members] == [
        ("bi/forward_lstm", (0,), "outputs"), ("bi/backward_lstm", (1,), "outputs")]
    before, after = weights(model.get_layer("bi")), weights(bi)
    columns = gated([0, 2, 3], 4, 4)
    np.testing.assert_array_equal(after["backward_lstm/lstm_cell/bias"],
                                  before["backward_lstm/lstm_cell/bias"][columns])


def test_bidirectional_directions_are_addressable_and_ranked_separately():
    model = bidirectional(layer=L.GRU(6, name="gru"))
    resolved = plan(model, spec_of("  - layer: bi/forward_gru\n    remove: [1]\n"
                                   "  - layer: bi/backward_gru\n    remove: [4]\n"))
    assert [tuple(m) for g in resolved.groups for m in g.members] == [
        ("bi/forward_gru", (1,), "outputs"), ("bi/backward_gru", (4,), "outputs")]
    rebuilt, resolved, _ = apply(spec_of("  - layer: bi\n    fraction: 0.5\n"), model)
    assert (rebuilt.get_layer("bi").forward_layer.units, rebuilt.get_layer("bi").backward_layer.units) == (3, 3)
    assert resolved.params == (model.count_params(), rebuilt.count_params())


def test_bidirectional_concat_refuses_unequal_directions():
    with pytest.raises(ConstraintError) as caught:
        plan(bidirectional(), spec_of("  - layer: bi\n    remove: [0]\n"))
    assert str(caught.value) == (
        "spec.yaml:3:5: rule 1 (layer 'bi'): cannot rebuild 'bi' (Bidirectional): it would keep 3 "
        "forward and 4 backward units, and Keras' Bidirectional concatenates only directions of "
        "equal width (remove as many units from each direction)")


@pytest.mark.parametrize("merge_mode", ["sum", "ave", "mul"])
def test_bidirectional_sum_couples_forward_and_backward_unit(merge_mode):
    model = bidirectional(merge_mode)
    rebuilt, resolved = prune(model, "  - layer: bi\n    remove: [2]\n", {
        "bi": {"forward_lstm/lstm_cell/recurrent_kernel": (0, [2]),
               "backward_lstm/lstm_cell/recurrent_kernel": (0, [2])},
        "head": {"kernel": (0, [2])}})
    assert resolved.groups[0].coupled_by == ("bi",)
    assert rebuilt.get_layer("bi").backward_layer.units == 3


def test_bidirectional_with_states_and_initial_states():
    keras.utils.set_random_seed(0)
    source, target = keras.Input((6, 4)), keras.Input((5, 4))
    encoded = L.Bidirectional(L.GRU(4, return_state=True, name="gru"), name="encoder")(source)
    _, forward_h, backward_h = encoded
    decoded = L.Bidirectional(L.GRU(4, name="gru"), merge_mode=None, name="decoder")(
        target, initial_state=[forward_h, backward_h])
    y = L.Dense(2, name="head")(L.Concatenate(name="cat")(list(decoded)))
    model = randomized(keras.Model([source, target], y))
    rebuilt, resolved = prune(model, "  - layer: encoder\n    remove: [1, 6]\n", {
        "encoder": {"forward_gru/gru_cell/recurrent_kernel": (0, [1]),
                    "backward_gru/gru_cell/recurrent_kernel": (0, [2])},
        "decoder": {"forward_gru/gru_cell/recurrent_kernel": (0, [1]),
                    "backward_gru/gru_cell/recurrent_kernel": (0, [2])},
        "head": {"kernel": (0, [1, 6])}})
    assert rebuilt.get_layer("decoder").forward_layer.units == 3


# -- TimeDistributed and ConvLSTM ------------------------------------------------------------------
def test_time_distributed_conv2d_filters_feed_an_lstm():
    keras.utils.set_random_seed(0)
    frames = keras.Input((4, 8, 8, 2))
    f = L.TimeDistributed(L.Conv2D(6, 3, name="conv"), name="frame_conv")(frames)
    f = L.TimeDistributed(L.GlobalAveragePooling2D(name="gap"), name="frame_pool")(f)
    model = randomized(keras.Model(frames, L.Dense(2, name="head")(L.LSTM(5, name="lstm")(f))))
    rebuilt, resolved = prune(model, "  - layer: frame_conv\n    remove: [0, 4]\n", {
        "frame_conv": {"conv/kernel": (-1, [0, 4]), "conv/bias": (0, [0, 4])}})
    assert rebuilt.get_layer("frame_conv").layer.filters == 4
    (change,) = [c for c in resolved.layers if c.path == "frame_conv"]
    assert change.config == {"layer": {"filters": 4}}
    assert change.flops == (2 * 4 * 36 * 3 * 3 * 2 * 6, 2 * 4 * 36 * 3 * 3 * 2 * 4)


@pytest.mark.parametrize("conv, shape", [(L.ConvLSTM1D, (5, 9, 3)), (L.ConvLSTM2D, (4, 6, 6, 2)),
                                          (L.ConvLSTM3D, (3, 4, 4, 4, 2))])
def test_conv_lstm_filters_are_units_with_gate_blocks(conv, shape):
    keras.utils.set_random_seed(0)
    x = keras.Input(shape)
    h = conv(6, 3, padding="same", name="conv_lstm")(x)
    pool = {1: L.GlobalAveragePooling1D, 2: L.GlobalAveragePooling2D, 3: L.GlobalAveragePooling3D}
    h = pool[len(shape) - 2](name="pool")(h)
    model = randomized(keras.Model(x, L.Dense(2, name="head")(h)), scale=0.3)
    rebuilt, _ = prune(model, "  - layer: conv_lstm\n    remove: [1, 2]\n", {
        "conv_lstm": {"conv_lstm_cell/recurrent_kernel": (-2, [1, 2])}, "head": {"kernel": (0, [1, 2])}})
    after = weights(rebuilt.get_layer("conv_lstm"))
    assert after["conv_lstm_cell/kernel"].shape[-2:] == (shape[-1], 16)
    assert after["conv_lstm_cell/recurrent_kernel"].shape[-2:] == (4, 16)


# -- scores, FLOPs, errors --------------------------------------------------------------------------
def test_a_unit_is_scored_by_every_weight_its_removal_deletes():
    model = stack(L.LSTM(8, name="lstm"))
    resolved = plan(model, spec_of("  - layer: lstm\n    count: 1\n    criterion: l2\n"))
    w = weights(model.get_layer("lstm"))
    energy = np.zeros(8)
    for block in range(4):
        cols = slice(block * 8, (block + 1) * 8)
        energy += (w["lstm_cell/kernel"][:, cols] ** 2).sum(0) + w["lstm_cell/bias"][cols] ** 2
        energy += (w["lstm_cell/recurrent_kernel"][:, cols] ** 2).sum(0)
    energy += (w["lstm_cell/recurrent_kernel"] ** 2).sum(1)
    energy += (model.get_layer("head").kernel.numpy() ** 2).sum(1)
    assert [m.removed for m in resolved.groups[0].members] == [(int(np.argmin(energy)),)]


def test_flops_count_every_time_step():
    model = stack(L.GRU(6, name="gru"), steps=7)
    resolved = plan(model, spec_of("  - layer: gru\n    remove: [0, 1]\n"))
    (change,) = [c for c in resolved.layers if c.path == "gru"]
    assert change.flops == (2 * 7 * (6 * 18 + 6 * 18), 2 * 7 * (6 * 12 + 4 * 12))
    assert change.params == (6 * 18 + 6 * 18 + 2 * 18, 6 * 12 + 4 * 12 + 2 * 12)


def test_an_explicitly_named_layer_that_loses_nothing_is_an_error():
    keras.utils.set_random_seed(0)
    x = keras.Input((7, 5))
    model = keras.Model(x, L.GRU(4, name="gru")(L.Dense(6, name="proj")(x)))
    with pytest.raises(ConstraintError) as caught:
        plan(model, spec_of("  - layer: gru\n    fraction: 0.5\n"))
    assert str(caught.value) == (
        "spec.yaml:4:15: rule 1 (layer 'gru'): removes nothing from 'gru': it reaches model output "
        "'gru' (removing it would change the model's interface) (hint: add 'optional: true' if "
        "the rule may remove nothing)")
    with pytest.raises(ConstraintError) as caught:
        plan(model, spec_of("  - layer: proj\n    fraction: 0.1\n"))
    assert "removes nothing from 'proj': fraction 0.1 of its 6 channels rounds down to none" in str(caught.value)
    optional = plan(model, spec_of("  - layer: gru\n    fraction: 0.5\n    optional: true\n"))
    assert optional.notes == ("rule 1 (layer 'gru'): left 'gru' alone: it reaches model output 'gru' "
                              "(removing it would change the model's interface)",)
    globbed = plan(model, spec_of("  - layer: 'g*'\n    fraction: 0.5\n"))
    assert len(globbed.notes) == 1 and not globbed.groups


def test_rebuilt_wrappers_save_and_load_without_custom_objects(tmp_path):
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 4))
    h = L.TimeDistributed(L.Dense(8, name="inner"), name="td")(x)
    h = L.Bidirectional(L.RNN(L.GRUCell(5, name="cell"), return_sequences=True, name="rnn"), name="bi")(h)
    model = randomized(keras.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling1D(name="pool")(h))))
    rebuilt, resolved = prune(model, "  - layer: td\n    remove: [3]\n  - layer: bi\n    remove: [0, 9]\n", {
        "td": {"inner/kernel": (1, [3]), "inner/bias": (0, [3])},
        "bi": {"forward_rnn/cell/recurrent_kernel": (0, [0]), "backward_rnn/cell/recurrent_kernel": (0, [4])},
        "head": {"kernel": (0, [0, 9])}})
    assert (rebuilt.get_layer("bi").forward_layer.cell.units, rebuilt.get_layer("td").layer.units) == (4, 7)
    rebuilt.save(tmp_path / "small.keras")
    loaded = keras.saving.load_model(tmp_path / "small.keras")
    reference.assert_outputs_close(rebuilt, loaded, reference.random_inputs(model), rtol=1e-6)
