"""Plans people review: the three formats, the JSON Schema, and byte-identical output across
processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

import models
from compiler.api import build_graph, emit, format_plan, plan
from compiler.artifacts import artifact_schema, render_json
from compiler.report import compress_indices
from clirun import run
from exactness import spec_of

ROOT = Path(__file__).resolve().parents[1]

ADD_SPEC = "  - layer: conv_a\n    remove: [1, 2]\n  - layer: conv_c\n    remove: [0, 2]\n"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Factory models saved as .keras files: name -> path."""
    folder = tmp_path_factory.mktemp("plans")
    paths = {}
    for name in ("add_bn_model", "se_model", "shared_layer_model", "concat_model"):
        paths[name] = folder / f"{name}.keras"
        models.FACTORIES[name]().save(paths[name])
    return paths


def test_text_plan_shows_each_group_member_on_its_own_line():
    resolved = plan(build_graph(models.add_bn_model()), spec_of(ADD_SPEC))
    text = format_plan(resolved, "text")
    # conv_a/conv_b: 3x3x3 kernels, 8 -> 6 filters; conv_c reads them: 3x3x8x4 -> 3x3x6x2.
    assert "conv_a  Conv2D                  (None, 8, 8, 8) -> (None, 8, 8, 6)  224 -> 168" in text
    assert "conv_c  Conv2D                  (None, 8, 8, 4) -> (None, 8, 8, 2)  292 -> 110" in text
    blocks = text.split("\n\n")
    assert "group 1: rule 1, coupled by add\n  conv_a  removes 2 of 8  1-2\n  conv_b  removes 2 of 8  1-2" in blocks
    assert "group 2: rule 2\n  conv_c  removes 2 of 4  0,2" in blocks
    assert text.endswith(f"total params {resolved.params[0]} -> {resolved.params[1]} "
                         f"({(resolved.params[1] - resolved.params[0]) / resolved.params[0] * 100:+.1f}%)\n"
                         f"total FLOPs {resolved.flops[0]} -> {resolved.flops[1]} "
                         f"({(resolved.flops[1] - resolved.flops[0]) / resolved.flops[0] * 100:+.1f}%)\n")


def test_markdown_plan_has_a_row_per_group_member():
    resolved = plan(build_graph(models.add_bn_model()), spec_of(ADD_SPEC))
    lines = format_plan(resolved, "markdown").splitlines()
    assert "| 1 | `conv_a` | 2 of 8 | 1-2 | 1 | `add` |" in lines
    assert "| 1 | `conv_b` | 2 of 8 | 1-2 | 1 | `add` |" in lines
    assert "| 2 | `conv_c` | 2 of 4 | 0,2 | 2 | - |" in lines
    assert "| `conv_a` | Conv2D | (None, 8, 8, 8) -> (None, 8, 8, 6) | 224 -> 168 | 27648 -> 20736 |" in lines


CASES = {  # factory -> a spec that removes something in it (coupled where the model couples)
    "add_bn_model": ADD_SPEC,
    "se_model": "  - layer: conv\n    remove: [0, 5]\n",
    "shared_layer_model": "  - layer: shared\n    count: 3\n",
    "concat_model": "  - type: Conv2D\n    fraction: 0.5\n",
    "nested_functional_model": "  - layer: backbone/conv1\n    keep: [0, 1, 2]\n",
    "mnist_cnn": "  - layer: conv2\n    fraction: 0.25\n  - layer: fc*\n    count: 12\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_json_plan_validates_against_its_shipped_schema(name):
    model = models.FACTORIES[name]()
    graph = build_graph(model)
    resolved = plan(graph, spec_of(CASES[name]))
    data = json.loads(format_plan(resolved, "json"))
    jsonschema.Draft202012Validator(artifact_schema("plan")).validate(data)
    assert data["groups"], "every case removes something"
    order = [call.path for call in graph.calls]
    listed = [layer["layer"] for layer in data["layers"]]
    assert listed == sorted(listed, key=order.index)          # topological order
    rebuilt = emit(model, resolved)
    assert data["totals"]["params"] == {"before": model.count_params(),
                                        "after": rebuilt.count_params()}


def test_json_plan_puts_one_layer_and_one_member_a_line():
    resolved = plan(build_graph(models.add_bn_model()), spec_of(ADD_SPEC))
    text = format_plan(resolved, "json")
    lines = text.splitlines()
    for change in resolved.changes():
        (line,) = [l for l in lines if l.lstrip().startswith(f'{{"layer": "{change.path}", "type"')]
        assert json.loads(line.strip().rstrip(","))["params"] == {"before": change.params[0],
                                                                  "after": change.params[1]}
    assert '        {"layer": "conv_b", "removed": [1, 2]}' in lines


def test_schema_rejects_a_plan_with_a_fractional_count():
    resolved = plan(build_graph(models.add_bn_model()), spec_of(ADD_SPEC))
    data = json.loads(format_plan(resolved, "json"))
    data["totals"]["params"]["after"] = 1.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, artifact_schema("plan"))


def test_render_json_is_json_and_keeps_key_order():
    value = {"z": 1, "a": {"rows": [{"x": [1, 2]}, {"x": []}], "n": None}, "notes": ["p", "q"]}
    text = render_json(value, rows=("rows",), lines=("notes",))
    assert json.loads(text) == value
    assert text == ('{\n  "z": 1,\n  "a": {\n    "rows": [\n      {"x": [1, 2]},\n      {"x": []}\n'
                    '    ],\n    "n": null\n  },\n  "notes": [\n    "p",\n    "q"\n  ]\n}\n')


def test_compress_indices():
    assert compress_indices([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert compress_indices([]) == ""


def test_plan_can_be_written_to_a_file(tmp_path, saved, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nprune:\n" + ADD_SPEC)
    out = tmp_path / "plan.json"
    code, stdout, err = run(capsys, "plan", spec, saved["add_bn_model"], "--format", "json", "-o", out)
    assert (code, stdout, err) == (0, f"wrote {out}\n", "")
    assert run(capsys, "plan", spec, saved["add_bn_model"], "--format", "json")[1] == out.read_text()


def test_positionals_may_follow_options(tmp_path, saved, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nprune:\n" + ADD_SPEC)
    code, out, _ = run(capsys, "plan", spec, "--format", "json", saved["add_bn_model"])
    assert code == 0 and json.loads(out)["model"] == "add_bn_model"


_TWICE = """
import sys
from compiler.cli import main
spec, model, out = sys.argv[1:]
codes = [main(["plan", spec, model, "--format", "json"]), main(["plan", spec, model]),
         main(["lock", spec, model, "-o", out])]
sys.exit(max(codes))
"""


def test_plan_and_lock_are_byte_identical_across_processes(tmp_path, saved):
    """Two processes with different hash seeds: same plan bytes (JSON and text), same lock."""
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nprune:\n  - type: Conv2D\n    fraction: 0.5\n")
    runs = []
    for seed in (1, 2):
        env = dict(os.environ, PYTHONHASHSEED=str(seed), TF_CPP_MIN_LOG_LEVEL="3")
        runs.append(subprocess.Popen(
            [sys.executable, "-c", _TWICE, str(spec), str(saved["concat_model"]),
             str(tmp_path / f"{seed}.lock")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE))
    (out1, err1), (out2, err2) = [process.communicate(timeout=300) for process in runs]
    assert [process.returncode for process in runs] == [0, 0], (err1, err2)
    assert (err1, err2) == (b"", b"")   # not even TensorFlow's banners
    assert out1.replace(b"1.lock", b"2.lock") == out2
    assert b'"format": "prunec-plan"' in out1 and b"\nplan: " in out1
    assert (tmp_path / "1.lock").read_bytes() == (tmp_path / "2.lock").read_bytes()
