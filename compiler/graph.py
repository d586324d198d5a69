"""Stage 2: the dependency graph of a Keras model, and the channel groups it implies.

``build_graph(model)`` walks every call of every operation (layers, raw ``keras.ops`` calls, nested
models, in topological order) and records it as a node of a ``networkx.DiGraph`` whose edges are
tensors. While walking, each call's rule propagates channel *layouts* (see ``layout.py``): producers
create fresh channel ids, merges and shared layers couple ids, and layers that cannot be reasoned
about mark the ids they read as *fixed*, with a reason.

Two words for what coupling builds: ids tied channel by channel (by an ``Add``, a shared layer, a
grouped conv) form a *group*, the unit of removal, known by its union-find root; producers whose
channels are tied by any group form a *coupled set*, within which criterion rules rank groups.
Blocks that must keep as many channels each without being tied channel by channel (the equal
sections of ``ops.split``) form a *balance*, which criterion rules choose around (``balance.py``).
Every channel block a rule creates is addressable: ``(path, unit)``, where ``path`` is a layer's
path or one of its exposed sub-layers (``mha/attention_output``) and ``unit`` is ``outputs`` or a
block the rule named (``heads``). This is the only module that reads Keras' private graph
attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import networkx as nx
import numpy as np

from .errors import ModelError
from .layout import Layout
from .compat import sublayers
from .rules import OUTPUTS, Call, rule_for
from .rules.base import channels

__all__ = ["ModelGraph", "Space", "Fix", "Balance", "build_graph"]


@dataclass(frozen=True)
class Space:
    """A block of channel ids created together: the outputs of one producer, a named block of a
    layer (its heads), or a model input."""

    owner: str          # call key of the producer (or producer/sublayer), or "input 'name'"
    start: int
    size: int
    unit: str = OUTPUTS


@dataclass(frozen=True)
class Fix:
    """Why a group cannot be removed: the call that stops it and what that call does."""

    key: str
    reason: str
    approximate: bool = False   # a rule may still remove it with `exact: false`


@dataclass(frozen=True)
class Balance:
    """Blocks of channel ids (a split's sections) that must keep as many positions each."""

    key: str                            # the call that needs it
    class_name: str
    sections: tuple[np.ndarray, ...]    # the ids at each block's positions
    what: str = "equal sections"        # what a message calls the blocks

    def label(self) -> str:
        return f"the {len(self.sections)} {self.what} of '{self.key}' ({self.class_name})"


@dataclass
class ModelGraph:
    model: keras.Model
    graph: nx.DiGraph                       # call keys; node attribute "call" holds the Call
    calls: list[Call]                       # topological order
    calls_by_path: dict[str, list[Call]]    # every call of one layer, first call first
    layers: dict[str, object]               # layer path -> layer object (nested models included)
    spaces: list[Space]
    root: np.ndarray                        # group root of every channel id
    fixed: dict[int, Fix]                   # root -> why the group cannot be removed
    coupled_by: dict[int, tuple[str, ...]]  # root -> the calls that coupled its members
    coupled_set: np.ndarray                 # root-indexed: number of the coupled set of a group
    # address path -> unit -> the distinct layouts a spec rule may select there
    units: dict[str, dict[str, list[Layout]]] = field(default_factory=dict)
    _space_starts: np.ndarray = field(repr=False, default=None)
    # nested model path -> (input shape, layout) of each of its inputs at its first call
    nested_inputs: dict[str, list[tuple[tuple, Layout | None]]] = field(default_factory=dict)
    balances: list[Balance] = field(default_factory=list)

    @property
    def num_ids(self) -> int:
        return int(self.root.shape[0])

    def space_of(self, ids: np.ndarray) -> np.ndarray:
        """Index into ``spaces`` of each id."""
        return np.searchsorted(self._space_starts, ids, side="right") - 1

    def describe_id(self, channel_id: int) -> str:
        space = self.spaces[int(self.space_of(np.array([channel_id]))[0])]
        owner = space.owner if space.owner.startswith("input '") else f"'{space.owner}'"
        return f"{unit_word(space.unit)} {channel_id - space.start} of {owner}"


def unit_word(unit: str) -> str:
    """How a message names one channel of ``unit``: ``channel``, ``head``, ``kv_head``."""
    if unit == OUTPUTS:
        return "channel"
    return unit[:-1] if unit.endswith("s") else unit


def build_graph(model: keras.Model) -> ModelGraph:
    """Walk ``model`` once and return its dependency graph with channel groups resolved.

    >>> graph = build_graph(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")]))
    >>> [call.key for call in graph.calls]
    ['fc']
    """
    return _Builder(model).build()


def _functional(model):
    if isinstance(model, keras.Sequential):
        inner = getattr(model, "_functional", None)
        if inner is None:
            raise ModelError(f"Sequential model '{model.name}' is not built",
                             hint="give it a keras.Input first, or call it once on data")
        return inner
    if not hasattr(model, "_nodes_by_depth"):
        raise ModelError(f"model '{model.name}' ({type(model).__name__}) is a subclassed model",
                         hint="prunec needs a Sequential or functional model whose graph it can read")
    return model


def _is_model(op) -> bool:
    return isinstance(op, keras.Model)


class _Builder:
    """Implements ``ChannelContext`` for the rules while walking the model once."""

    def __init__(self, model: keras.Model):
        self.model = model
        self.graph = nx.DiGraph()
        self.calls: list[Call] = []
        self.calls_by_path: dict[str, list[Call]] = {}
        self.layers: dict[str, object] = {}
        self.spaces: list[Space] = []
        self.num_ids = 0
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []    # ids coupled position by position
        self.fresh_by_layer: dict[str, Layout] = {}
        self.fixes: list[tuple[np.ndarray, Fix]] = []
        self.couplings: list[tuple[str, np.ndarray]] = []
        self.call_counts: dict[int, int] = {}
        self.first_paths: dict[int, str] = {}       # id(layer) -> the path of its first call
        self.nested_inputs: dict[str, list[tuple[tuple, Layout | None]]] = {}
        self.units: dict[str, dict[str, list[Layout]]] = {}
        self.balances: list[Balance] = []

    # -- ChannelContext -------------------------------------------------------------------------
    def _allocate(self, owner: str, size: int, unit: str = OUTPUTS) -> Layout:
        start = self.num_ids
        self.num_ids += size
        self.spaces.append(Space(owner, start, size, unit))
        return Layout.fresh(start, size)

    def fresh(self, call: Call, size: int, unit: str = OUTPUTS, sublayer: str | None = None) -> Layout:
        rule = rule_for(call.op)
        layer = call.path if rule is not None and rule.couples_calls else call.key
        key = (layer, sublayer, unit)
        if key not in self.fresh_by_layer:
            owner = call.key if sublayer is None else f"{call.key}/{sublayer}"
            self.fresh_by_layer[key] = self._allocate(owner, int(size), unit)
        layout = self.fresh_by_layer[key]
        if sublayer is not None:
            call.units[sublayer if unit == OUTPUTS else f"{sublayer}/{unit}"] = layout
            self.expose(call, layout, sublayer, unit)
        elif unit != OUTPUTS:
            call.units[unit] = layout
            self._address(call.path, unit, layout)
        return layout

    def expose(self, call: Call, layout: Layout, sublayer: str, unit: str = OUTPUTS) -> None:
        path = f"{call.path}/{sublayer}"
        if path not in self.layers:
            self.layers[path] = _sublayer(call.op, sublayer)
        self._address(path, unit, layout)

    def _address(self, path: str, unit: str, layout: Layout | None) -> None:
        if layout is None or getattr(layout, "spans_axes", False):   # mid-shuffle: not a unit
            return
        seen = self.units.setdefault(path, {}).setdefault(unit, [])
        if layout not in seen:
            seen.append(layout)

    def stop(self, call: Call, reason: str) -> list[Layout | None]:
        self.fix(call, call.inputs, reason)
        return [self.opaque(call, shape, reason) for shape in call.output_shapes]

    def couple(self, call: Call, layouts: list[Layout]) -> None:
        layouts = [layout for layout in layouts if layout is not None]
        sizes = {len(layout) for layout in layouts}
        if len(sizes) > 1:
            raise ModelError(f"inputs of '{call.key}' ({call.class_name}) have different channel "
                             f"counts {sorted(sizes)} but are combined channel by channel")
        for other in layouts[1:]:
            self.pairs.append((layouts[0].ids, other.ids))
        if len(layouts) > 1:
            self.couplings.append((call.key, np.concatenate([layout.ids for layout in layouts])))

    def balance(self, call: Call, layouts: list[Layout], what: str = "equal sections") -> None:
        sections = tuple(layout.ids for layout in layouts if layout is not None)
        if len(sections) > 1:
            self.balances.append(Balance(call.key, call.class_name, sections, what))

    def fix(self, call: Call, layouts, reason: str, approximate: bool = False) -> None:
        for layout in layouts:
            if layout is not None and len(layout):
                self.fixes.append((layout.ids, Fix(call.key, reason, approximate)))

    def opaque(self, call: Call, shape: tuple, reason: str) -> Layout | None:
        size = channels(shape)
        if size is None:
            return None
        layout = self._allocate(call.key, size)
        self.fix(call, [layout], f"it is produced by '{call.key}' ({call.class_name}), and {reason}")
        return layout

    # -- walking --------------------------------------------------------------------------------
    def build(self) -> ModelGraph:
        functional = _functional(self.model)
        producers: dict[int, str] = {}
        input_layouts = []
        for tensor in functional.inputs:
            name = tensor._keras_history[0].name
            key = name
            self.graph.add_node(key, call=None, kind="input")
            producers[id(tensor)] = key
            layout = self._allocate(f"input '{name}'", channels(tensor.shape) or 0)
            fake = Call(key, key, tensor._keras_history[0], 0, [], [tuple(tensor.shape)])
            self.fix(fake, [layout], f"it is model input '{name}' (removing it would change the "
                     "model's interface)")
            input_layouts.append(layout if channels(tensor.shape) else None)
        outputs = self._walk(functional, "", input_layouts, producers)
        for tensor, layout in zip(functional.outputs, outputs):
            name = tensor._keras_history[0].name
            fake = Call(name, name, tensor._keras_history[0], 0, [], [])
            self.fix(fake, [layout], f"it reaches model output '{producers[id(tensor)]}' (removing it "
                     "would change the model's interface)")
            self.graph.nodes[producers[id(tensor)]]["output"] = True
        return self._finish()

    def _walk(self, model, prefix: str, input_layouts, producers: dict[int, str]):
        functional = _functional(model)
        layouts: dict[int, Layout | None] = {}
        for tensor, layout in zip(functional.inputs, input_layouts):
            layouts[id(tensor)] = layout
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            for node in functional._nodes_by_depth[depth]:
                if node.is_input or node.operation is None:
                    continue
                self._visit(node, prefix, layouts, producers)
        return [layouts.get(id(tensor)) for tensor in functional.outputs]

    def _visit(self, node, prefix: str, layouts, producers) -> None:
        op = node.operation
        path = prefix + op.name
        in_layouts = [layouts.get(id(t)) for t in node.input_tensors]
        if _is_model(op):
            self.layers.setdefault(path, op)
            inner = _functional(op)
            self.nested_inputs.setdefault(
                path, [(tuple(t.shape), layout) for t, layout in zip(inner.inputs, in_layouts)])
            for outer, inner_tensor in zip(node.input_tensors, inner.inputs):
                producers[id(inner_tensor)] = producers.get(id(outer))
            outs = self._walk(op, path + "/", in_layouts, producers)
            for tensor, inner_tensor, layout in zip(node.outputs, inner.outputs, outs):
                producers[id(tensor)] = producers.get(id(inner_tensor))
                layouts[id(tensor)] = layout
            return
        index = self.call_counts.get(id(op), 0)
        self.call_counts[id(op)] = index + 1
        if index == 0:
            self.first_paths[id(op)] = path
        else:       # a layer shared across nesting levels (a task reusing its backbone's
            path = self.first_paths[id(op)]      # embedding) keeps the path of its first call
        key = path if index == 0 else f"{path}@{index}"
        arguments = tuple(keras.tree.map_structure(
            lambda a: None if isinstance(a, keras.KerasTensor) else a, list(node.arguments.args)))
        call = Call(key, path, op, index, [tuple(t.shape) for t in node.input_tensors],
                    [tuple(t.shape) for t in node.outputs], arguments, in_layouts,
                    input_names=_argument_names(node))
        self.layers.setdefault(path, op)
        rule = rule_for(op)
        if rule is None:
            reason = f"prunec has no rule for {type(op).__name__}"
            self.fix(call, in_layouts, f"it is read by '{key}' ({type(op).__name__}), and {reason}")
            outs = [self._allocate(key, channels(t.shape)) if channels(t.shape) else None
                    for t in node.outputs]
            self.fix(call, outs, f"it is produced by '{key}' ({type(op).__name__}), and {reason}")
        elif not getattr(rule, "accepts_grids", False) and any(
                getattr(layout, "spans_axes", False) for layout in in_layouts):
            outs = self.stop(call, "its input's channels are spread over two axes (a channel "
                             "shuffle must swap them and Reshape them back first)")
        else:
            outs = list(rule.propagate(call, self))
            if rule.couples_calls and index > 0:
                first = self.calls_by_path[path][0]
                for mine, theirs in zip(in_layouts, first.inputs):
                    if mine is not None and theirs is not None:
                        self.couple(call, [theirs, mine])
        call.outputs = outs
        if outs:
            self._address(path, OUTPUTS, outs[0])
        self.calls.append(call)
        self.calls_by_path.setdefault(path, []).append(call)
        self.graph.add_node(key, call=call, kind="layer")
        for tensor in node.input_tensors:
            source = producers.get(id(tensor))
            if source is not None:
                self.graph.add_edge(source, key)
        for tensor, layout in zip(node.outputs, outs):
            producers[id(tensor)] = key
            layouts[id(tensor)] = layout

    def _finish(self) -> ModelGraph:
        n = self.num_ids
        root = _group_roots(n, self.pairs)
        fixed: dict[int, Fix] = {}
        for ids, fix in self.fixes:
            for r in np.unique(root[ids]).tolist():
                current = fixed.get(r)
                if current is None or (current.approximate and not fix.approximate):
                    fixed[r] = fix
        coupled: dict[int, list[str]] = {}
        for key, ids in self.couplings:
            for r in np.unique(root[ids]).tolist():
                names = coupled.setdefault(r, [])
                if key not in names:
                    names.append(key)
        starts = np.array([space.start for space in self.spaces], dtype=np.int64)
        space_of = np.searchsorted(starts, np.arange(n), side="right") - 1
        sets = nx.Graph()            # spaces, joined where a group has members in both
        sets.add_nodes_from(range(len(self.spaces)))
        root_space = np.unique(np.stack([root, space_of]), axis=1) if n else np.zeros((2, 0), int)
        first = np.unique(root_space[0], return_index=True)[1]
        first_space = np.repeat(root_space[1][first], np.diff(np.append(first, root_space.shape[1])))
        joined = first_space != root_space[1]
        sets.add_edges_from(zip(first_space[joined].tolist(), root_space[1][joined].tolist()))
        set_of_space = np.zeros(len(self.spaces), dtype=np.int64)
        for number, members in enumerate(nx.connected_components(sets)):
            set_of_space[list(members)] = number
        coupled_set = set_of_space[space_of[root]] if n else np.zeros(0, dtype=np.int64)
        return ModelGraph(self.model, self.graph, self.calls, self.calls_by_path, self.layers,
                          self.spaces, root, fixed, {r: tuple(v) for r, v in coupled.items()},
                          coupled_set, self.units, starts, self.nested_inputs, self.balances)


def _group_roots(n: int, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Union-find over all coupled pairs at once: each id's root is the smallest id of its group.

    Hook the larger root of every unequal pair onto the smaller, then compress every path
    (``root = root[root]``) until nothing moves; repeat until every pair agrees. The smallest id
    of a group only ever points at itself, so it ends as the root.
    """
    root = np.arange(n, dtype=np.int64)
    if not pairs:
        return root
    a = np.concatenate([pair[0] for pair in pairs])
    b = np.concatenate([pair[1] for pair in pairs])
    while True:
        ra, rb = root[a], root[b]
        unequal = ra != rb
        if not unequal.any():
            return root
        low = np.minimum(ra[unequal], rb[unequal])
        np.minimum.at(root, ra[unequal], low)
        np.minimum.at(root, rb[unequal], low)
        while True:
            jumped = root[root]
            if np.array_equal(jumped, root):
                break
            root = jumped


def _argument_names(node) -> list[str | None]:
    """For each input tensor of ``node``: the call argument it was passed as ("0", "key").

    Keras lists a node's input tensors in ``tree.flatten((args, kwargs))`` order (a tensor passed
    twice is listed twice), so the names are flattened the same way beside them.
    """
    args, kwargs = node.arguments.args, node.arguments.kwargs
    names = (tuple(keras.tree.map_structure(lambda _, i=i: str(i), a) for i, a in enumerate(args)),
             {k: keras.tree.map_structure(lambda _, k=k: k, v) for k, v in kwargs.items()})
    values = keras.tree.flatten((tuple(args), dict(kwargs)))
    flat = keras.tree.flatten(names)
    found = [name for value, name in zip(values, flat) if isinstance(value, keras.KerasTensor)]
    return found if len(found) == len(node.input_tensors) else [None] * len(node.input_tensors)


def _sublayer(layer, path: str):
    """The sub-layer of ``layer`` at ``path`` ("query", "block/ffn"), or None if not tracked."""
    for name in path.split("/"):
        layer = next((s for s in sublayers(layer) if s.name == name), None) if layer else None
    return layer
