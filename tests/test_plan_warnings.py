"""Plans that say what they do: an explicit list that coupling widens warns (one stderr line per rule,
from the plan), and the plan's notes show it."""

import re

from keras import layers

from breadth import assert_prunes_exactly, model_of, spec_of
from clirun import run
from exactness import refusal
from compiler.api import build_graph, format_plan, plan


def grouped_model():
    return model_of(lambda x: layers.Conv2D(3, 1, name="conv_b")(
        layers.Conv2D(6, 3, padding="same", groups=2, name="gconv")(
            layers.Conv2D(8, 3, padding="same", name="conv_a")(x))))


def depthwise_model():
    return model_of(lambda x: layers.Conv2D(3, 1, name="conv_b")(
        layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(
            layers.Conv2D(4, 3, padding="same", name="conv_a")(x))))


GROUPED = ("rule 1 (layer 'conv_a'): listed 1 channel of 'conv_a', removes 4 of 'conv_a' and 3 of "
           "'gconv', because 'gconv' couples channels into groups that go together")


def test_a_grouped_conv_widening_a_list_warns_and_the_plan_notes_it():
    model = grouped_model()
    resolved = plan(build_graph(model), spec_of("  - layer: conv_a\n    remove: [1]\n"))
    assert resolved.warnings == ("spec.yaml:4:13: " + GROUPED,)
    assert f"note: {GROUPED}\n" in format_plan(resolved)
    # and what it removes is exactly what it says (4 inputs of gconv's first group, 3 of its outputs)
    assert_prunes_exactly(model, "  - layer: conv_a\n    remove: [1]\n",
                          {"gconv": [0, 1, 2, 3], "conv_b": [0, 1, 2]})


def test_a_depth_multiplier_moving_an_index_to_its_producer_warns():
    resolved = plan(build_graph(depthwise_model()), spec_of("  - layer: dw\n    remove: [3]\n"))
    assert resolved.warnings == (
        "spec.yaml:4:13: rule 1 (layer 'dw'): listed 1 channel of 'dw', removes 2 of 'dw' and 1 "
        "of 'conv_a', because 'dw' repeats each channel it reads (a depth multiplier)",)
    (group,) = resolved.groups
    assert group.members[0].layer == "conv_a" and group.members[0].removed == (1,)


def test_keep_list_widened_by_coupling_warns():
    resolved = plan(build_graph(depthwise_model()), spec_of("  - layer: dw\n    keep: [0, 2, 4]\n"))
    assert resolved.warnings == (
        "spec.yaml:4:11: rule 1 (layer 'dw'): listed 3 channels of 'dw' to keep, keeps 6, because "
        "'dw' repeats each channel it reads (a depth multiplier)",)


def test_a_list_that_takes_only_coupled_partners_with_it_does_not_warn():
    resolved = plan(build_graph(grouped_model()), spec_of("  - layer: gconv\n    remove: [0, 1, 2]\n"))
    assert [m.layer for m in resolved.groups[0].members] == ["conv_a", "gconv"]
    assert resolved.warnings == ()               # gconv loses what was listed; conv_a is its group
    residual = model_of(lambda x: layers.Add(name="add")([
        layers.Conv2D(6, 1, name="conv_a")(x), layers.Conv2D(6, 3, padding="same", name="conv_b")(x)]))
    resolved = plan(build_graph(residual), spec_of("  - layer: conv_a\n    remove: [1, 2]\n"))
    assert len(resolved.groups[0].members) == 2 and resolved.warnings == ()
    plain = model_of(lambda x: layers.Conv2D(3, 1, name="conv_b")(layers.Conv2D(6, 1, name="conv_a")(x)))
    assert plan(build_graph(plain), spec_of("  - layer: conv_a\n    remove: [1, 2]\n")).warnings == ()


def test_the_cli_prints_one_warning_line_per_rule(tmp_path, capsys):
    model_path, spec_path = tmp_path / "m.keras", tmp_path / "s.yaml"
    grouped_model().save(model_path)
    spec_path.write_text("version: 1\nprune:\n  - layer: conv_a\n    remove: [1]\n"
                         "  - layer: conv_a\n    remove: [1, 2]\n")
    code, out, err = run(capsys, "plan", spec_path, model_path)
    assert code == 0, err
    lines = err.splitlines()
    assert lines == [f"warning: {spec_path}:4:13: {GROUPED}",
                     f"warning: {spec_path}:6:13: " + GROUPED.replace("rule 1", "rule 2").replace(
                         "listed 1 channel", "listed 2 channels")], err
    assert re.search(r"^note: rule 1 \(layer 'conv_a'\): listed 1 channel", out, re.M)
    code, out, err = run(capsys, "apply", spec_path, model_path, "-o", tmp_path / "out.keras")
    assert code == 0 and len(err.splitlines()) == 2 and err.startswith("warning: ")


def test_a_batch_prints_each_models_warnings(tmp_path, capsys):
    model_path, spec_path = tmp_path / "m.keras", tmp_path / "s.yaml"
    grouped_model().save(model_path)
    spec_path.write_text("version: 1\nprune:\n  - layer: conv_a\n    remove: [1]\n")
    code, out, err = run(capsys, "apply", spec_path, model_path, "--out-dir", tmp_path / "out")
    assert code == 0, err
    assert err.splitlines() == [f"warning: {model_path}: {spec_path}:4:13: {GROUPED}"]


def test_a_criterion_on_grouped_channels_counts_groups_not_channels():
    """conv_a's 8 channels go in gconv's 2 groups of 4: a fraction or count counts those groups."""
    resolved = plan(build_graph(grouped_model()), spec_of(
        "  - layer: conv_a\n    fraction: 0.25\n    optional: true\n"))
    assert resolved.notes == ("rule 1 (layer 'conv_a'): left 'conv_a' alone: fraction 0.25 of its "
                              "2 channel groups of 4 rounds down to none",)
    assert refusal(grouped_model(), "  - layer: conv_a\n    count: 2\n") == (
        "spec.yaml:4:12: rule 1 (layer 'conv_a'): count 2 would remove every channel of 'conv_a' "
        "(2 channel groups of 4) (hint: valid range 1..1)")

