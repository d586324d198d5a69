"""Rules for your own layers, declared in one call instead of written as a ``Rule`` subclass.

prunec stops, loudly, at any layer it has no rule for (only when a removal reaches it). For a
layer class of your own, say what it does with channels and which of its weights are indexed by
them, and prunec prunes through it, slicing those weights by *path* (a weight the layer creates itself is
named by its own name; one of a sub-layer by ``sublayer/name``)::

    @keras.saving.register_keras_serializable(package="my_layers")
    class ChannelScale(keras.layers.Layer):          # y[..., c] = x[..., c] * scale[c]
        def build(self, input_shape):
            self.scale = self.add_weight(name="scale", shape=(input_shape[-1],))
        def call(self, x):
            return x * self.scale

    register_rule(ChannelScale, "per_channel", weights={"scale": -1})

The three kinds, and the math each one promises:

* ``"per_channel"``: output channel ``c`` is a function of input channel ``c`` (and of weights
  indexed by ``c``) alone: ``y[..., c] = f(x[..., c], w[c])``. The output carries the input's
  channels; ``weights`` maps each per-channel variable to its channel axis. Removing ``c`` slices
  ``w[c]`` away and is exact.
* ``"elementwise"``: ``y[..., c] = f(a[..., c], b[..., c], ...)`` over inputs of equal width (like
  ``Add``): channel ``c`` of every input is one group, removed from all of them together.
* ``"producer"``: reads every input channel into new output channels, like ``Dense``:
  ``y[..., j] = g(sum_i x[..., i] K[i, j], b[j])`` with ``g`` per channel. ``weights`` maps each
  variable to ``{"in": axis, "out": axis}`` (either may be left out), and ``units`` names the config
  key holding the number of outputs, which the rebuilt layer gets. Removing input ``i`` deletes
  ``K[i, :]`` — exactly feeding it zero (the correctness law); removing output ``j`` deletes
  ``K[:, j]`` and ``b[j]``.

A declaration that does not match the layer is caught: a ``per_channel`` layer whose output width
differs from its input's, or a listed variable whose axis is not as wide as the channels, stops any
removal through it with that reason; and ``prunec apply`` checks every rebuilt model against the
original before writing it. For anything else, subclass ``compiler.rules.Rule`` and decorate it
with ``compiler.rules.register(YourLayer)`` (see ``compiler/rules/base.py``). Rules are looked up
along the class's MRO, so a subclass of a registered layer is handled too.
"""

from __future__ import annotations

from collections.abc import Mapping

from .layout import Layout
from .rules import Call, Kept, Rule, register
from .rules.base import produce, spatial_positions, weight_paths
from .rules.merge import ElementwiseRule

__all__ = ["register_rule", "KINDS"]

KINDS = ("per_channel", "elementwise", "producer")


def register_rule(layer_class: type, kind: str, weights: Mapping | None = None,
                  units: str | None = None) -> type[Rule]:
    """Teach prunec how ``layer_class`` moves channels; returns the generated ``Rule`` class.

    Raises ``ValueError`` for an unknown ``kind``, a malformed ``weights``, or a class that already
    has a rule of its own (rules are not replaced silently).
    """
    if not isinstance(layer_class, type):
        raise TypeError(f"register_rule needs a layer class, got {layer_class!r}")
    weights = dict(weights or {})
    name = f"{layer_class.__name__}Rule"
    if kind == "per_channel":
        for variable, axis in weights.items():
            if not isinstance(axis, int):
                raise ValueError(f"{name}: weights[{variable!r}] must be the channel axis (an int), "
                                 f"got {axis!r}")
        rule = type(name, (_PerChannel,), {"axes": weights, "couples_calls": bool(weights)})
    elif kind == "elementwise":
        if weights:
            raise ValueError(f"{name}: an elementwise rule slices no weights; use 'per_channel' "
                             "or subclass compiler.rules.Rule")
        rule = type(name, (ElementwiseRule,), {})
    elif kind == "producer":
        if not isinstance(units, str):
            raise ValueError(f"{name}: a producer needs units=<the config key of its output count>, "
                             "such as units='units'")
        for variable, axes in weights.items():
            if not isinstance(axes, Mapping) or not set(axes) <= {"in", "out"} or not axes or \
                    not all(isinstance(a, int) for a in axes.values()):
                raise ValueError(f"{name}: weights[{variable!r}] must map 'in' and/or 'out' to an "
                                 f"axis, such as {{'in': 0, 'out': 1}}; got {axes!r}")
        rule = type(name, (_Producer,), {"axes": weights, "units": units})
    else:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    rule.__module__ = layer_class.__module__
    rule.__doc__ = f"Declared with register_rule({layer_class.__name__}, {kind!r})."
    register(layer_class)(rule)
    return rule


def _variable_widths(op) -> dict[str, list[tuple]]:
    return {path: [tuple(variable.shape)] for path, variable in weight_paths(op).items()}


class _PerChannel(Rule):
    axes: dict = {}

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        layout = call.inputs[0] if call.inputs else None
        width = call.output_shapes[0][-1] if call.output_shapes and call.output_shapes[0] else None
        reason = None
        if layout is not None and width != len(layout):
            reason = (f"it is declared per_channel but turns {len(layout)} channels into {width}")
        shapes = _variable_widths(call.op)
        for name, axis in self.axes.items():
            for shape in shapes.get(name, ()):
                if layout is not None and shape and shape[axis] not in (1, len(layout)):
                    reason = (f"its variable '{name}' has {shape[axis]} entries on axis {axis}, "
                              f"not one per channel ({len(layout)})")
        if reason:
            return ctx.stop(call, reason)
        return [layout]

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        layout = call.inputs[0] if call.inputs else None
        if layout is None:
            return {}
        shapes = _variable_widths(call.op)
        return {name: {axis: layout} for name, axis in self.axes.items()
                if any(shape and shape[axis] == len(layout) for shape in shapes.get(name, ()))}


class _Producer(Rule):
    axes: dict = {}
    units: str = "units"

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        return produce(call, ctx, call.output_shapes[0][-1])

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        result: dict[str, dict[int, Layout]] = {}
        for name, axes in self.axes.items():
            entry = {}
            if "out" in axes:
                entry[axes["out"]] = call.outputs[0]
            if "in" in axes and call.inputs and call.inputs[0] is not None:
                entry[axes["in"]] = call.inputs[0]
            result[name] = entry
        return result

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        return {self.units: kept.outputs[0]}

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        """Counted like a Dense: every variable with both an input and an output axis."""
        total = 0
        for name, axes in self.axes.items():
            if {"in", "out"} <= set(axes) and name in weight_shapes:
                shape = weight_shapes[name]
                total += shape[axes["in"]] * shape[axes["out"]]
        return total * spatial_positions(call.output_shapes[0])
