"""EinsumDense: a Dense written as an einsum equation ``input,kernel->output``.

``keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 64), bias_axes="d")`` computes
``y = einsum(equation, x, K) + b``. Channels are the last axis of each tensor, so the equation's
letters say everything:

* the output's last letter ``o`` is a *free axis of the kernel's own* when ``o`` is in the kernel
  and not in the input: the layer is then a producer along ``o`` (like Dense's units). Removing
  output channel ``j`` deletes ``K[..., j, ...]`` on the kernel's ``o`` axis and ``b[..., j]``
  when ``o`` is a bias axis (the bias's last axis, since bias axes run to the output's end);
  ``output_shape``'s last entry drops.
* the input's last letter ``i`` is *contracted* when it is in the kernel and not in the output:
  removing input channel ``c`` deletes ``K[..., c, ...]`` on the kernel's ``i`` axis, exactly
  as reading zero there.

Any other equation (output channels that come from the input, input channels that survive into
a non-channel axis, ``...`` at an end) fixes its channels with a reason naming the equation.
"""

from __future__ import annotations

import re
from math import prod

import keras

from ..layout import Layout
from .base import Call, Kept, Rule, register

__all__ = ["EinsumDenseRule", "parse_equation"]

_EQUATION = re.compile(r"^\s*([a-zA-Z.]+)\s*,\s*([a-zA-Z.]+)\s*->\s*([a-zA-Z.]+)\s*$")


def parse_equation(equation: str) -> tuple[str, str, str] | None:
    """``(input, kernel, output)`` letter strings, or None if it is not ``x,y->z``."""
    match = _EQUATION.match(equation)
    return match.groups() if match else None


def _producer_axis(equation: str) -> tuple[int | None, str | None]:
    """The kernel axis that the output's channels index, or ``(None, why not)``."""
    parsed = parse_equation(equation)
    if parsed is None:
        return None, f"its equation '{equation}' is not of the form 'input,kernel->output'"
    source, kernel, output = parsed
    last = output[-1]
    if last == "." or last not in kernel or last in source:
        return None, (f"its equation '{equation}' does not give the output channels "
                      f"('{last}') an axis of its own kernel")
    return kernel.index(last), None


def _contracted_axis(equation: str) -> int | None:
    """The kernel axis the input's channels are rows of, or None when they are not contracted."""
    parsed = parse_equation(equation)
    if parsed is None:
        return None
    source, kernel, output = parsed
    last = source[-1]
    if last == "." or last not in kernel or last in output:
        return None
    return kernel.index(last)


@register(keras.layers.EinsumDense)
class EinsumDenseRule(Rule):
    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        equation = call.op.equation
        axis, why = _producer_axis(equation)
        if axis is None:
            return ctx.stop(call, why)
        if _contracted_axis(equation) is None:
            ctx.fix(call, call.inputs, f"its equation '{equation}' does not contract its input "
                    "channels into its kernel")
        return [ctx.fresh(call, call.output_shapes[0][-1])]

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        out = call.outputs[0] if call.outputs else None
        axis, _ = _producer_axis(call.op.equation)
        if out is None or axis is None:
            return {}
        axes = {"kernel": {axis: out}}
        bias_axes = call.op.bias_axes or ""
        _, _, output = parse_equation(call.op.equation)
        if output[-1] in bias_axes:
            axes["bias"] = {-1: out}
        rows = _contracted_axis(call.op.equation)
        if rows is not None and call.inputs and call.inputs[0] is not None:
            axes["kernel"][rows] = call.inputs[0]
        return axes

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        shape = config.get("output_shape")
        if isinstance(shape, (list, tuple)):
            return {"output_shape": list(shape[:-1]) + [kept.outputs[0]]}
        return {"output_shape": kept.outputs[0]}

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        """One multiply-accumulate per combination of every letter's index (batch excluded)."""
        parsed = parse_equation(call.op.equation)
        if parsed is None or "." in "".join(parsed) or "kernel" not in weight_shapes:
            return 0
        source, kernel, output = parsed
        sizes: dict[str, int] = {}
        for letters, shape in ((source, call.input_shapes[0]), (output, call.output_shapes[0]),
                               (kernel, weight_shapes["kernel"])):
            for letter, size in zip(letters, shape):
                if size is not None:
                    sizes[letter] = int(size)        # the kernel's (sliced) sizes come last
        batch = source[0] if source[0] == output[0] else None
        return prod(size for letter, size in sizes.items() if letter != batch)
