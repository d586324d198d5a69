"""``prunec graph``: the dependency graph as Graphviz DOT, coupled groups coloured.

One node per call (a shared layer has one per call, ``shared@1``), one edge per tensor, nested
models drawn as clusters. Colours mark *groups*: without a plan, every coupled set (channels tied
together by an ``Add``, ``Multiply``, a shared layer...) gets a colour on its producers, and the
layers that couple it get a border of that colour; with a plan, only the removed groups do, and
every layer the plan changes says how (``removes 2 of 8 [1-2]``, params before -> after).
Layers where removals stop (no rule, a channel-mixing softmax) have a dashed red border.

DOT text needs nothing; SVG and PNG are rendered by Graphviz's ``dot`` program when installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING, Mapping

from .files import replacing
from .errors import CompilerError
from .layout import OUTPUTS
from .report import compress_indices

if TYPE_CHECKING:  # both import Keras; checking an output path does not need it
    from .graph import ModelGraph
    from .plan import Plan

__all__ = ["to_dot", "write_graph", "renderer", "FORMATS", "PALETTE"]

FORMATS = (".dot", ".gv", ".svg", ".png", ".pdf")
# Pastel fills dark text stays readable on (ColorBrewer Set3), each with a name for the legend.
PALETTE = (("#8dd3c7", "teal"), ("#ffffb3", "yellow"), ("#bebada", "lilac"),
           ("#fb8072", "salmon"), ("#80b1d3", "blue"), ("#fdb462", "orange"),
           ("#b3de69", "green"), ("#fccde5", "pink"), ("#bc80bd", "purple"),
           ("#ccebc5", "mint"), ("#ffed6f", "gold"), ("#d9d9d9", "grey"))
LEGEND_LIMIT = 24


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _coupled_sets(graph: ModelGraph) -> list[tuple[list[str], list[str]]]:
    """``(producers, coupling calls)`` of every coupled set, in the order the model creates them."""
    couplers: dict[int, list[str]] = {}
    for root, keys in graph.coupled_by.items():
        names = couplers.setdefault(int(graph.coupled_set[root]), [])
        names.extend(k for k in keys if k not in names)
    producers: dict[int, list[str]] = {}
    for space in graph.spaces:
        component = int(graph.coupled_set[graph.root[space.start]]) if space.size else None
        if component in couplers and space.owner in graph.graph:
            names = producers.setdefault(component, [])
            if space.owner not in names:
                names.append(space.owner)
    return [(names, couplers[c]) for c, names in producers.items()]


def _stops(graph: ModelGraph) -> dict[str, str]:
    """Calls where removals stop for a reason other than being a model input or output."""
    stops: dict[str, str] = {}
    for fix in graph.fixed.values():
        node = graph.graph.nodes.get(fix.key)
        if node is None or node.get("kind") == "input" or node.get("output"):
            continue
        stops.setdefault(fix.key, fix.reason)
    return stops


@dataclass
class _Marks:
    """What to draw on top of the bare graph: fills, borders, extra label lines, a legend."""

    title: str
    fill: dict[str, str] = field(default_factory=dict)
    border: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    shapes: dict[str, str] = field(default_factory=dict)
    legend: list[str] = field(default_factory=list)


def _mark_coupled_sets(graph: ModelGraph) -> _Marks:
    sets = _coupled_sets(graph)
    marks = _Marks(f"model '{graph.model.name}': {len(sets)} coupled "
                   f"set{'' if len(sets) == 1 else 's'} (channels removed together)")
    for number, (producers, couplers) in enumerate(sets):
        colour, name = PALETTE[number % len(PALETTE)]
        for key in producers:
            marks.fill.setdefault(key, colour)
        for key in couplers:
            marks.border.setdefault(key, colour)
        marks.legend.append(f"{name}: {', '.join(producers)} coupled by {', '.join(couplers)}")
    return marks


def _mark_plan(plan: Plan) -> _Marks:
    (p0, p1), (f0, f1) = plan.params, plan.flops
    marks = _Marks(f"plan {plan.spec_path} on model '{plan.model_name}': params {p0} -> {p1}, "
                   f"FLOPs {f0} -> {f1}")
    for change in plan.changes():
        before, after = change.output_shape
        if before != after:
            marks.shapes[change.path] = f"{_shape(before)} -> {_shape(after)}"
        if change.params != (0, 0):
            marks.notes.setdefault(change.path, []).append(
                f"params {change.params[0]} -> {change.params[1]}")
    for index, group in enumerate(plan.groups):
        colour, name = PALETTE[index % len(PALETTE)]
        sizes = group.sizes or (None,) * len(group.members)
        for (owner, removed, unit), size in zip(group.members, sizes):
            marks.fill.setdefault(owner, colour)
            total = f" of {size}" if size else ""
            what = "" if unit == OUTPUTS else f" {unit}"
            marks.notes.setdefault(owner, []).insert(
                0, f"removes {len(removed)}{total}{what} [{_short(compress_indices(removed))}]")
        for key in group.coupled_by:
            marks.border.setdefault(key, colour)
        coupled = f" coupled by {', '.join(group.coupled_by)}" if group.coupled_by else ""
        marks.legend.append(f"{name}: group {group.number}{coupled}")
    return marks


def to_dot(graph: ModelGraph, plan: Plan | None = None) -> str:
    """DOT text for ``graph``; with ``plan``, its removed groups and changed layers annotated."""
    marks = _mark_coupled_sets(graph) if plan is None else _mark_plan(plan)
    legend = marks.legend[:LEGEND_LIMIT]
    if len(marks.legend) > LEGEND_LIMIT:
        legend.append(f"... and {len(marks.legend) - LEGEND_LIMIT} more")
    stops = _stops(graph)
    if stops:
        legend.append("dashed red: removals stop there (hover for why)")
    lines = [f"digraph {_quote(graph.model.name)} {{",
             "  graph [rankdir=TB, fontname=Helvetica, fontsize=11, labelloc=t, labeljust=l, "
             f"label={_quote(chr(10).join([marks.title] + legend) + chr(10))}];",
             '  node [shape=box, style="rounded,filled", fillcolor=white, fontname=Helvetica, '
             "fontsize=10];",
             '  edge [color="#555555", arrowsize=0.6];']
    clusters: dict[str, list[str]] = {}
    for key, data in graph.graph.nodes(data=True):
        call = data.get("call")
        if call is None:
            label, attributes = f"{key}\nInput", ["shape=ellipse"]
        else:
            shape = _shape(call.output_shapes[0] if call.output_shapes else ())
            label, attributes = f"{key}\n{call.class_name} {marks.shapes.get(key, shape)}", []
        label += "".join("\n" + note for note in marks.notes.get(key, ()))
        colour = marks.fill.get(key) or (marks.fill.get(call.path) if call is not None else None)
        if colour:   # a shared layer's later calls share its channels, so its colour
            attributes.append(f'fillcolor="{colour}"')
        if key in marks.border:
            attributes.append(f'color="{marks.border[key]}", penwidth=3')
        if key in stops:
            label += "\nremovals stop here"
            attributes.append('color="#d62728", style="rounded,filled,dashed", penwidth=2, '
                              f"tooltip={_quote(stops[key])}")
        node = f"{_quote(key)} [{', '.join([f'label={_quote(label)}'] + attributes)}];"
        clusters.setdefault(_parent(key), []).append(node)
    sublayers = _sublayer_nodes(graph, marks)
    for path, node in sublayers.items():
        clusters.setdefault(_parent(path), []).append(node)
    lines += _clusters(clusters, "", 1)
    lines += [f"  {_quote(source)} -> {_quote(target)};" for source, target in graph.graph.edges()]
    lines += [f"  {_quote(_parent(path))} -> {_quote(path)} [style=dotted, arrowhead=none];"
              for path in sublayers]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _sublayer_nodes(graph: ModelGraph, marks: "_Marks") -> dict[str, str]:
    """A node per sub-layer a composite layer exposes (``mha/attention_output``), drawn in the
    composite's cluster with its units, so that a spec's sub-layer paths can be found here."""
    nodes = {}
    for path, units in graph.units.items():
        if path in graph.graph or _parent(path) not in graph.graph:
            continue
        kind = type(graph.layers.get(path)).__name__ if graph.layers.get(path) is not None else "sub-layer"
        sizes = ", ".join(f"{unit} {len(layouts[0])}" for unit, layouts in sorted(units.items()))
        label = f"{path}\n{kind} ({sizes})" + "".join("\n" + n for n in marks.notes.get(path, ()))
        attributes = ['style="rounded,filled,dotted"']
        if path in marks.fill:
            attributes.append(f'fillcolor="{marks.fill[path]}"')
        nodes[path] = f"{_quote(path)} [{', '.join([f'label={_quote(label)}'] + attributes)}];"
    return nodes


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _clusters(clusters: dict[str, list[str]], prefix: str, depth: int) -> list[str]:
    """Nodes directly in ``prefix`` and, nested inside, a cluster per nested model below it."""
    pad = "  " * depth
    lines = [pad + node for node in clusters.get(prefix, ())]
    children: list[str] = []   # in the order of their first node
    for path in clusters:
        while path and _parent(path) != prefix:
            path = _parent(path)
        if path and path not in children:
            children.append(path)
    for child in children:
        lines.append(f"{pad}subgraph {_quote('cluster_' + child)} {{")
        lines.append(f'{pad}  label={_quote(child)}; style=rounded; color="#999999";')
        lines += _clusters(clusters, child, depth + 1)
        lines.append(f"{pad}}}")
    return lines


def _short(indices: str, limit: int = 40) -> str:
    """A long index list cut at a comma: a node stays readable (the plan has the whole list)."""
    if len(indices) <= limit:
        return indices
    return indices[:indices.rfind(",", 0, limit)] + ",..."


def _shape(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def renderer(out: str | os.PathLike) -> str | None:
    """Check ``out`` can be written: None for DOT text, else the ``dot`` program that renders it.

    Called before any model is loaded, so a missing Graphviz fails in a second, not a minute.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise CompilerError(f"unknown graph format '{suffix or out.name}'", str(out),
                            "name the output .dot, .svg, .png or .pdf")
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise CompilerError("output directory does not exist", str(out))
    if suffix in (".dot", ".gv"):
        return None
    dot = shutil.which("dot")
    if dot is None:
        raise CompilerError(f"cannot render {suffix}: Graphviz's 'dot' program is not "
                            "installed", str(out), "install Graphviz (apt-get install "
                            "graphviz, brew install graphviz), or write a .dot file")
    return dot


def write_graph(text: str, out: str | os.PathLike, protect: Mapping | None = None) -> None:
    """Write DOT ``text`` to ``out``; ``.svg``/``.png``/``.pdf`` are rendered with Graphviz.

    ``protect`` names the inputs ``out`` may not replace, as for ``files.replacing``."""
    dot = renderer(out)
    with replacing(out, CompilerError, protect) as temporary:
        if dot is None:
            Path(temporary).write_text(text, encoding="utf-8")
            return
        done = subprocess.run([dot, f"-T{Path(out).suffix.lower()[1:]}", "-o", temporary],
                              input=text.encode("utf-8"), capture_output=True, check=False)
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip().splitlines()
            raise CompilerError(f"Graphviz 'dot' failed: {message[0] if message else done.returncode}",
                                str(out), "write a .dot file and render it yourself")
