"""A criterion ranks channels by trainable weights only; when a frozen layer's weights are sliced too,
the plan says so."""

from keras import layers

from breadth import model_of, spec_of
from compiler.api import apply, build_graph, format_plan, plan


def two_convs(freeze: bool):
    model = model_of(lambda x: layers.Conv2D(4, 1, name="conv_b")(
        layers.Conv2D(6, 3, padding="same", name="conv_a")(x)))
    model.get_layer("conv_b").trainable = not freeze
    return model


def test_a_criterion_that_ignores_frozen_weights_says_so():
    model = two_convs(freeze=True)
    resolved = plan(build_graph(model), spec_of("  - layer: conv_a\n    fraction: 0.5\n"))
    note = ("rule 1 (layer 'conv_a'): criterion l1 ranks channels by trainable weights only; it "
            "ignores the frozen (non-trainable) weights of 'conv_b', which its removals also slice")
    assert resolved.notes == (note,)
    assert f"note: {note}\n" in format_plan(resolved)
    rebuilt, resolved, _ = apply(spec_of("  - layer: conv_a\n    fraction: 0.5\n"), model)
    assert resolved.params == (model.count_params(), rebuilt.count_params())


def test_no_note_when_nothing_is_frozen_or_no_criterion():
    assert plan(build_graph(two_convs(freeze=False)),
                spec_of("  - layer: conv_a\n    fraction: 0.5\n")).notes == ()
    assert plan(build_graph(two_convs(freeze=True)),
                spec_of("  - layer: conv_a\n    remove: [1]\n")).notes == ()
