"""What every layer rule is, and the registry that finds a rule by Keras class.

A rule answers four questions about one layer family, and nothing else:

1. ``propagate``: given the layouts of a call's inputs, what are the layouts of its outputs?
   Producers (Dense, Conv) allocate fresh channels; pass-through layers return their input;
   merges couple their inputs; layers that cannot be reasoned about ``stop`` there. A layer may
   also own *named channel blocks* inside it (``ctx.fresh(call, n, unit="heads")``: an attention
   layer's heads, an FFN's intermediate width, an RNN direction's units), which specs target with
   ``unit:``, and may expose its sub-layers by path (``ctx.expose(call, layout, "query")``).
2. ``weight_axes``: which axis of which weight is indexed by which layout. Weights are named by
   their *path relative to the layer* (``kernel``, ``query/kernel``,
   ``forward_lstm/lstm_cell/recurrent_kernel``), never by position nor by bare variable name
   (Keras 3 does not keep names unique). Slicing, masking, magnitude scores and parameter counts
   all follow from this one declaration.
3. ``config_changes``: the config keys that change with the kept channel counts (``units``,
   ``filters``, ``num_heads``, a Reshape's ``target_shape``), given a ``Kept``.
4. ``macs``: multiply-accumulates of one call, from the (possibly sliced) weight shapes.

(``check`` may refuse kept counts Keras cannot build, e.g. a Bidirectional concatenating
directions of different widths.)

Rules are registered by the Keras class they handle and found along the class's MRO, so a
subclass of Dense is handled as a Dense unless it registers a rule of its own.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from math import prod
from typing import Any, Callable, Protocol

from ..compat import named_weights
from ..layout import OUTPUTS, Layout

__all__ = ["Call", "ChannelContext", "Kept", "Rule", "Unsatisfiable", "OUTPUTS", "register", "rule_for",
           "channels", "activation_reason", "is_channel_axis", "includes_channel_axis", "spatial_positions", "produce", "weight_paths"]

@dataclass(eq=False)
class Call:
    """One call of one operation in the model graph (a shared layer has several)."""

    key: str                       # unique node id: "conv2", "shared@1", "backbone/conv1"
    path: str                      # the layer's path: "backbone/conv1"
    op: Any                        # the keras Layer or Operation
    index: int                     # which call of this op (0 for the first)
    input_shapes: list[tuple]
    output_shapes: list[tuple]
    arguments: tuple = ()          # positional call arguments, KerasTensors replaced by None
    inputs: list[Layout | None] = field(default_factory=list)
    outputs: list[Layout | None] = field(default_factory=list)
    # which call argument each input tensor was passed as: "0", "1", "key", "attention_mask" ...
    input_names: list[str | None] = field(default_factory=list)
    # named blocks owned by this layer; a sub-layer's block by its name ("forward_lstm")
    units: dict[str, Layout] = field(default_factory=dict)

    @property
    def class_name(self) -> str:
        return type(self.op).__name__

    def input(self, *names: str) -> Layout | None:
        """The layout of the input passed as argument ``names[0]`` (or ``names[1]`` ...), or None."""
        position = self.input_position(*names)
        return None if position is None else self.inputs[position]

    def input_position(self, *names: str) -> int | None:
        """Where in ``inputs`` the argument ``names[0]`` (else ``names[1]`` ...) is, or None."""
        for name in names:
            if name in self.input_names:
                return self.input_names.index(name)
        return None


@dataclass(frozen=True)
class Kept:
    """Kept channel counts of one call: per output, per named unit of the layer, per input."""

    outputs: list[int | None]
    units: dict[str, int] = field(default_factory=dict)
    inputs: list[int | None] = field(default_factory=list)
    # per input: the kept positions along its channel axis (for a config that lists per-channel
    # values, or a raw op's constant indices), None when its layout is unknown
    input_positions: list[tuple[int, ...] | None] = field(default_factory=list)


class Unsatisfiable(Exception):
    """Raised by ``config_changes`` when the kept channels cannot be rebuilt (a split whose equal
    sections would become unequal); the planner reports it against the spec rule."""

    def __init__(self, reason: str, hint: str | None = None):
        super().__init__(reason)
        self.reason, self.hint = reason, hint


class ChannelContext(Protocol):
    """What a rule may do to the channel graph while propagating (implemented in graph.py)."""

    def fresh(self, call: Call, size: int, unit: str = OUTPUTS, sublayer: str | None = None) -> Layout:
        """New channel ids owned by ``call``'s layer (or its ``sublayer``), as ``unit``."""
    def expose(self, call: Call, layout: Layout, sublayer: str, unit: str = OUTPUTS) -> None:
        """Make ``layout`` selectable as ``<layer>/<sublayer>`` (and drawn, and planned)."""
    def couple(self, call: Call, layouts: list[Layout]) -> None:
        """Channel ``c`` of every layout is one group: removed from all of them, or none."""
    def balance(self, call: Call, layouts: list[Layout], what: str = "equal sections") -> None:
        """These blocks must keep as many channels each (a split's equal sections): criterion
        rules choose so that they do; ``config_changes``/``check`` still refuse explicit lists
        that do not."""
    def fix(self, call: Call, layouts: list[Layout | None], reason: str,
            approximate: bool = False) -> None:
        """These channels cannot be removed (``approximate``: unless a rule says ``exact: false``)."""
    def opaque(self, call: Call, shape: tuple, reason: str) -> Layout | None:
        """Fresh, fixed channels for an output nothing can be said about."""
    def stop(self, call: Call, reason: str) -> list[Layout | None]:
        """Stop here: fix every input, and return fixed outputs; ``return ctx.stop(call, why)``."""


class Rule:
    """Base rule; subclasses override what their family needs."""

    #: every call of one layer shares its weights, so all calls must keep the same channels
    couples_calls: bool = True
    #: its outputs feed back into it (a recurrent layer), so a removed output is also read inside
    #: the layer: verification then runs a copy with zeroed weights instead of zeroing its inputs
    reads_own_outputs: bool = False

    def propagate(self, call: Call, ctx: ChannelContext) -> list[Layout | None]:
        raise NotImplementedError

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        return {}

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        return {}

    def argument_changes(self, call: Call, kept: Kept) -> dict[int, Any]:
        """A raw op's positional call arguments that change (``x[..., a:b]``'s key), by position."""
        return {}

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        return 0

    def layer_config(self, op: Any) -> dict:
        """The config the layer is rebuilt from (a rule may repair a layer's own)."""
        return op.get_config()

    def rebuilt_class(self, op: Any, config: dict) -> type:
        """The class the layer is rebuilt as from ``config`` (the plan's changes applied): its
        own, unless its class cannot express them (keras-hub blocks with fewer heads)."""
        return type(op)

    def implied(self, call: Call, removed) -> tuple[Any, tuple | None]:
        """Ids that the removal ``removed`` (a boolean mask over every id) also takes inside this
        layer, or ``(message, hint)`` when the layer cannot be rebuilt that way: grouped-query
        attention, whose key/value head takes its query group. ``(message, hint, ids)`` names the
        ids the refusal is about, so that it blames the rule that removed them (else: any
        removed id of the layer's units)."""
        return (), None

    def check(self, call: Call, kept: Kept) -> str | None:
        """Why the layer cannot be rebuilt with these kept counts (a Keras limit), or None."""
        return None


def channels(shape: tuple) -> int | None:
    """The size of the channel (last) axis, or None when it is unknown or absent."""
    if not shape:
        return None
    last = shape[-1]
    return int(last) if last is not None else None


def _axes(call: Call, axis) -> tuple[int, list[int]]:
    rank = len(call.input_shapes[0])
    if axis is None:
        return rank, list(range(rank))
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return rank, sorted({int(a) % rank for a in axes})


def is_channel_axis(call: Call, axis) -> bool:
    """Whether ``axis`` (an int, a list of them, or None for every axis) is exactly the channel axis."""
    rank, axes = _axes(call, axis)
    return axes == [rank - 1]


def includes_channel_axis(call: Call, axis) -> bool:
    """Whether ``axis`` (an int, a list of them, or None for every axis) includes the channel axis."""
    rank, axes = _axes(call, axis)
    return rank - 1 in axes


def spatial_positions(shape: tuple) -> int:
    """Positions a kernel is applied at: the product of the axes between batch and channels."""
    dims = [d for d in shape[1:-1]]
    if any(d is None for d in dims):
        return 1
    return int(prod(dims)) if dims else 1


def weight_paths(layer: Any) -> dict[str, Any]:
    """``relative path -> variable`` for every weight of ``layer``, in creation order.

    A weight's path is the names of the sub-layers that hold it and its own name (``query/kernel``
    in a MultiHeadAttention), walked from the layer itself, so it does not depend on the name
    scope the layer happened to be built in. Names alone are not unique (an attention layer has
    four ``kernel``s); two weights that would still share a path get ``#1``, ``#2`` ...
    """
    found: dict[str, Any] = {}
    for path, variable in named_weights(layer) if hasattr(layer, "_layers") else ():
        key, number = path, 0
        while key in found:     # never silently alias two weights
            number += 1
            key = f"{path}#{number}"
        found[key] = variable
    return found


_REGISTRY: dict[type, Rule] = {}


def register(*classes: type) -> Callable[[type[Rule]], type[Rule]]:
    """Class decorator: ``@register(keras.layers.Dense)`` makes the rule handle that class."""

    def decorate(rule_class: type[Rule]) -> type[Rule]:
        instance = rule_class()
        for cls in classes:
            if cls in _REGISTRY:
                raise ValueError(
                    f"{cls.__name__} already has the rule {type(_REGISTRY[cls]).__name__}; "
                    f"cannot also register {rule_class.__name__}"
                )
            _REGISTRY[cls] = instance
        return rule_class

    return decorate


_WHEN_IMPORTED: dict[str, Callable[[], None]] = {}


def register_when_imported(package: str, load: Callable[[], None]) -> None:
    """Run ``load`` (which registers rules) once something else has imported ``package``: rules
    for an optional library (keras-hub) cost nothing to a model that does not use it."""
    _WHEN_IMPORTED[package] = load


def rule_for(op: Any) -> Rule | None:
    """The rule registered for the nearest class in ``type(op)``'s MRO, or None if unknown."""
    if _WHEN_IMPORTED:
        for package in [p for p in _WHEN_IMPORTED if p in sys.modules]:
            _WHEN_IMPORTED.pop(package)()
    for cls in type(op).__mro__:
        rule = _REGISTRY.get(cls)
        if rule is not None:
            return rule
    return None


#: Activations that act on each value alone (``y = f(x)`` entry by entry): channel ``c`` of the
#: output depends on channel ``c`` of the input only. Anything else -- ``softmax``, ``sparsemax``,
#: ``glu`` (which halves and mixes the channel axis), a custom callable -- fixes the channels.
ELEMENTWISE_ACTIVATIONS = (
    "celu", "elu", "exponential", "gelu", "hard_shrink", "hard_sigmoid", "hard_silu", "hard_swish",
    "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "mish", "relu", "relu6", "selu", "sigmoid",
    "silu", "soft_shrink", "softplus", "softsign", "sparse_plus", "sparse_sigmoid", "squareplus",
    "swish", "tanh", "tanh_shrink", "threshold",
)
_CHANNEL_MIXING_ACTIVATIONS = {"softmax", "log_softmax", "sparsemax", "glu"}
_elementwise: set[int] = set()


def _is_elementwise(activation: Any) -> bool:
    if not _elementwise:
        import keras
        for name in ELEMENTWISE_ACTIVATIONS:
            found = getattr(keras.activations, name, None)
            if found is not None:
                _elementwise.add(id(found))
    return id(activation) in _elementwise


def mixing_activation(op: Any) -> str | None:
    """The name of ``op``'s activation unless it is a known elementwise one (then None).

    Matched by identity with ``keras.activations``' own functions, so a custom function that is
    merely *named* ``relu`` is not taken for it.
    """
    activation = getattr(op, "activation", None)
    if activation is None or _is_elementwise(activation):
        return None
    return getattr(activation, "__name__", None) or type(activation).__name__


def activation_reason(op: Any) -> str | None:
    """Why ``op``'s own activation stops channels (None when it acts channel by channel)."""
    name = mixing_activation(op)
    if name is None:
        return None
    if name in _CHANNEL_MIXING_ACTIVATIONS:
        return f"its activation '{name}' mixes channels"
    return (f"its activation '{name}' is not known to act channel by channel (prunec passes "
            f"only elementwise activations such as relu, gelu, sigmoid)")


def produce(call: Call, ctx: ChannelContext, size: int) -> list[Layout | None]:
    """Fresh output channels for a producer, fixed when its own activation mixes them."""
    layout = ctx.fresh(call, size)
    reason = activation_reason(call.op)
    if reason:
        ctx.fix(call, [layout], reason)
    return [layout]
