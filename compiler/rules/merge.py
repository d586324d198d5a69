"""Merges: elementwise ones couple their inputs, Concatenate lays them side by side.

* ``Add, Subtract, Multiply, Average, Maximum, Minimum``, InceptionResNetV2's ``CustomScaleLayer``
  (``a + b * scale``, a scalar ``scale``) (and the raw ``keras.ops`` calls
  ``x + y``, ``x * y``, ``ops.maximum`` ... that Keras 3 records in ``model.operations``) compute
  ``y_c = f(a_c, b_c)``: channel ``c`` of every input and of the output is one *group*. A removal
  that hits any member removes ``c`` from all of them. An input whose channel axis has size 1 while
  the output's is wider is broadcast and couples nothing; a scalar constant passes channels
  through; a per-channel constant array cannot be sliced from the graph, so its channels are fixed.
* ``Concatenate(axis=-1)``: the output layout is the input layouts one after another, so every
  offset behind a removed channel shifts. Along any other axis the inputs share their channels
  and are coupled like an Add.
"""

from __future__ import annotations

import keras
import numpy as np

from ..compat import CustomScaleLayer
from ..compat import ops_numpy as knp
from ..layout import Layout
from .base import Call, Rule, is_channel_axis, register

__all__ = ["ElementwiseRule", "ConcatenateRule"]

L = keras.layers

ELEMENTWISE_LAYERS = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
ELEMENTWISE_OPS = tuple(
    getattr(knp, name)
    for name in ("Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power")
    if hasattr(knp, name)
)


@register(*ELEMENTWISE_LAYERS, *ELEMENTWISE_OPS, CustomScaleLayer)
class ElementwiseRule(Rule):
    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        width = call.output_shapes[0][-1] if call.output_shapes[0] else None
        carriers = [layout for layout, shape in zip(call.inputs, call.input_shapes)
                    if shape and shape[-1] == width]     # width 1 everywhere: no broadcast either
        for constant in call.arguments:
            if not isinstance(constant, (int, float, np.ndarray, np.generic)):
                continue                       # a tensor (None) or a list of them
            shape = np.shape(constant)
            if len(shape) and shape[-1] != 1 and shape[-1] == width:
                ctx.fix(call, carriers, "it combines them with a per-channel constant")
        if not carriers or any(layout is None for layout in carriers):
            return [ctx.opaque(call, call.output_shapes[0], "unknown channel count")]
        if len(carriers) > 1:
            ctx.couple(call, carriers)
        return [carriers[0]]


@register(L.Concatenate, knp.Concatenate)
class ConcatenateRule(Rule):
    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        if any(layout is None for layout in call.inputs):
            return [ctx.opaque(call, call.output_shapes[0], "unknown channel count")]
        if is_channel_axis(call, call.op.axis):
            return [Layout.concat(call.inputs)]
        ctx.couple(call, call.inputs)
        return [call.inputs[0]]
