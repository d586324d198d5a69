"""``prunec graph``: DOT text with coupled groups coloured and removals annotated; SVG via Graphviz."""

import re
import shutil

import pytest

import models
from compiler.api import build_graph, parse_spec, plan
from compiler.draw import PALETTE, to_dot
from clirun import run


def node(dot: str, key: str) -> str:
    """The attribute list of one node statement."""
    (line,) = [l.strip() for l in dot.splitlines() if l.strip().startswith(f'"{key}" [')]
    return line


def attribute(line: str, name: str) -> str | None:
    found = re.search(rf'(?<![\w]){name}=("(?:[^"\\]|\\.)*"|[^,\]]+)', line)
    return found.group(1).strip('"') if found else None


def test_without_a_spec_each_coupled_set_gets_one_colour():
    dot = to_dot(build_graph(models.add_bn_model()))
    teal = PALETTE[0][0]
    assert attribute(node(dot, "conv_a"), "fillcolor") == teal
    assert attribute(node(dot, "conv_b"), "fillcolor") == teal
    assert attribute(node(dot, "add"), "color") == teal     # what couples them: a border
    assert attribute(node(dot, "conv_c"), "fillcolor") is None
    assert "teal: conv_a, conv_b coupled by add" in dot
    edges = {tuple(m) for m in re.findall(r'^\s*"([^"]+)" -> "([^"]+)";$', dot, re.M)}
    assert edges == {("image", "conv_a"), ("image", "conv_b"), ("conv_a", "bn_a"), ("bn_a", "relu_a"),
                     ("relu_a", "add"), ("conv_b", "add"), ("add", "conv_c"), ("conv_c", "gap"),
                     ("gap", "head")}


def test_with_a_plan_groups_are_coloured_and_removals_annotated():
    graph = build_graph(models.add_bn_model())
    spec = parse_spec("version: 1\nprune:\n  - layer: conv_a\n    remove: [1, 2]\n"
                      "  - layer: conv_c\n    remove: [3]\n", "s.yaml")
    dot = to_dot(graph, plan(graph, spec))
    conv_a, conv_c = node(dot, "conv_a"), node(dot, "conv_c")
    assert attribute(conv_a, "label") == (
        r"conv_a\nConv2D (None, 8, 8, 8) -> (None, 8, 8, 6)\nremoves 2 of 8 [1-2]\nparams 224 -> 168")
    assert attribute(conv_c, "label").split(r"\n")[2] == "removes 1 of 4 [3]"
    assert attribute(conv_a, "fillcolor") == attribute(node(dot, "conv_b"), "fillcolor") == PALETTE[0][0]
    assert attribute(conv_c, "fillcolor") == PALETTE[1][0]
    assert attribute(node(dot, "bn_a"), "fillcolor") is None
    assert attribute(node(dot, "bn_a"), "label") == (
        r"bn_a\nBatchNormalization (None, 8, 8, 8) -> (None, 8, 8, 6)\nparams 32 -> 24")


def test_long_index_lists_are_cut_in_labels():
    graph = build_graph(models.mnist_cnn())
    removed = list(range(0, 40, 2))
    spec = parse_spec(f"version: 1\nprune:\n  - layer: fc1\n    remove: {removed}\n", "s.yaml")
    dot = to_dot(graph, plan(graph, spec))
    assert attribute(node(dot, "fc1"), "label").split(r"\n")[2] == (
        "removes 20 of 512 [0,2,4,6,8,10,12,14,16,18,20,22,24,26,28,...]")


def test_layers_that_stop_removals_are_dashed_with_the_reason():
    dot = to_dot(build_graph(models.lambda_model()))
    lam = node(dot, "lam")
    assert "dashed" in attribute(lam, "style") and attribute(lam, "color") == "#d62728"
    assert attribute(lam, "tooltip") == "it is read by 'lam' (Lambda), and prunec has no rule for Lambda"
    assert "dashed" not in (attribute(node(dot, "head"), "style") or "")   # an output: expected


def test_nested_models_are_clusters():
    dot = to_dot(build_graph(models.nested_functional_model()))
    cluster = dot[dot.index('subgraph "cluster_backbone" {'):]
    cluster = cluster[:cluster.index("\n  }")]
    assert [k for k in ("backbone/conv1", "backbone/relu", "backbone/conv2", "flatten", "head")
            if f'"{k}" [' in cluster] == ["backbone/conv1", "backbone/relu", "backbone/conv2"]


def test_cli_writes_dot(tmp_path, capsys):
    model = tmp_path / "m.keras"
    models.shared_layer_model().save(model)
    out = tmp_path / "g.dot"
    assert run(capsys, "graph", model, "-o", out) == (0, f"wrote {out}: 6 nodes, coupled sets coloured\n", "")
    dot = out.read_text()
    assert attribute(node(dot, "shared@1"), "fillcolor") == attribute(node(dot, "shared"), "fillcolor")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_cli_renders_svg_with_graphviz(tmp_path, capsys):
    model, spec = tmp_path / "m.keras", tmp_path / "s.yaml"
    models.add_bn_model().save(model)
    spec.write_text("version: 1\nprune:\n  - layer: conv_a\n    remove: [1]\n")
    out = tmp_path / "g.svg"
    assert run(capsys, "graph", model, spec, "-o", out) == (0, f"wrote {out}: 9 nodes, 1 removed group coloured\n", "")
    svg = out.read_text()
    assert "<svg" in svg and "removes 1 of 8 [1]" in svg


def test_missing_graphviz_fails_before_loading_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "g.png"
    code, _, err = run(capsys, "graph", tmp_path / "no-such-model.keras", "-o", out)
    assert code == 1
    assert err == (f"error: {out}: cannot render .png: Graphviz's 'dot' program is not installed "
                   "(hint: install Graphviz (apt-get install graphviz, brew install graphviz), or "
                   "write a .dot file)\n")
    assert list(tmp_path.iterdir()) == []


def test_unknown_graph_format(tmp_path, capsys):
    out = tmp_path / "g.jpeg"
    assert run(capsys, "graph", "m.keras", "-o", out) == (
        1, "", f"error: {out}: unknown graph format '.jpeg' (hint: name the output .dot, .svg, .png or .pdf)\n")


def test_sub_layers_of_a_composite_layer_are_drawn_in_its_cluster():
    from test_attention import attention_model
    from compiler.api import draw
    from exactness import spec_of
    dot = draw(attention_model(), spec_of("  - layer: mha\n    unit: heads\n    remove: [1]\n"))
    assert '"mha/attention_output" [label="mha/attention_output\\nEinsumDense (outputs 16)"' in dot
    assert 'subgraph "cluster_mha"' in dot
    assert '"mha" -> "mha/attention_output" [style=dotted, arrowhead=none];' in dot
    assert "removes 1 of 4 heads [1]" in node(dot, "mha")
