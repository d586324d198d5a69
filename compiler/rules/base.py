"""What every layer rule is, and the registry that finds a rule by Keras class.

A rule answers four questions about one layer family, and nothing else:

1. ``propagate``: given the layouts of a call's inputs, what are the layouts of its outputs?
   Producers (Dense, Conv) allocate fresh channels; pass-through layers return their input;
   merges couple their inputs; layers that cannot be reasoned about make their inputs *fixed*.
2. ``weight_axes``: which axis of which weight variable is indexed by which layout. Slicing,
   masking, magnitude scores and parameter counts are all derived from this one declaration, by
   variable *name* (never by position: BatchNormalization's variables depend on its config).
3. ``config_changes``: the config keys that change with the kept channel counts (``units``,
   ``filters``, a Reshape's ``target_shape``).
4. ``macs``: multiply-accumulates of one call, from the (possibly sliced) weight shapes.

Rules are registered by the Keras class they handle and found along the class's MRO, so a
subclass of Dense is handled as a Dense unless it registers a rule of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any, Callable, Protocol

from ..layout import Layout

__all__ = ["Call", "ChannelContext", "Rule", "register", "rule_for", "registered_classes"]


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

    @property
    def class_name(self) -> str:
        return type(self.op).__name__


class ChannelContext(Protocol):
    """What a rule may do to the channel graph while propagating (implemented in graph.py)."""

    def fresh(self, call: Call, size: int) -> Layout: ...
    def couple(self, call: Call, layouts: list[Layout]) -> None: ...
    def fix(self, call: Call, layouts: list[Layout | None], reason: str) -> None: ...
    def opaque(self, call: Call, shape: tuple, reason: str) -> Layout | None: ...


class Rule:
    """Base rule; subclasses override what their family needs."""

    #: every call of one layer shares its weights, so all calls must keep the same channels
    couples_calls: bool = True
    #: reads channels into new ones (Dense, Conv): the places where the correctness law zeroes
    mixes_channels: bool = False

    def propagate(self, call: Call, ctx: ChannelContext) -> list[Layout | None]:
        raise NotImplementedError

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        return {}

    def config_changes(self, call: Call, config: dict, kept_outputs: list[int]) -> dict:
        return {}

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        return 0


def channels(shape: tuple) -> int | None:
    """The size of the channel (last) axis, or None when it is unknown or absent."""
    if not shape:
        return None
    last = shape[-1]
    return int(last) if last is not None else None


def spatial_positions(shape: tuple) -> int:
    """Positions a kernel is applied at: the product of the axes between batch and channels."""
    dims = [d for d in shape[1:-1]]
    if any(d is None for d in dims):
        return 1
    return int(prod(dims)) if dims else 1


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


def rule_for(op: Any) -> Rule | None:
    """The rule registered for the nearest class in ``type(op)``'s MRO, or None if unknown."""
    for cls in type(op).__mro__:
        rule = _REGISTRY.get(cls)
        if rule is not None:
            return rule
    return None


def registered_classes() -> list[type]:
    return list(_REGISTRY)


_CHANNEL_MIXING_ACTIVATIONS = {"softmax", "log_softmax"}


def mixing_activation(op: Any) -> str | None:
    """The name of ``op``'s activation if it mixes channels (softmax), else None."""
    activation = getattr(op, "activation", None)
    name = getattr(activation, "__name__", None)
    return name if name in _CHANNEL_MIXING_ACTIVATIONS else None


def produce(call: Call, ctx: ChannelContext, size: int) -> list[Layout | None]:
    """Fresh output channels for a producer, fixed when its own activation mixes them."""
    layout = ctx.fresh(call, size)
    activation = mixing_activation(call.op)
    if activation:
        ctx.fix(call, [layout], f"its activation '{activation}' mixes all of its outputs")
    return [layout]
