"""Raw ``keras.ops`` calls recorded in a functional graph (``model.operations``, not ``model.layers``).

Keras 3 turns ``tf.nn.relu(x)``-style code on symbolic tensors into Operation nodes: ``ops.relu``,
``ops.sigmoid``, ``ops.abs`` ... are applied element by element, so channel ``c`` of the output is
a function of channel ``c`` of the input (pass-through). Reductions (``ops.mean(x, axis=(1, 2))``)
pass channels through while the channel axis is not reduced. Binary elementwise ops live in
``merge.py``; anything not listed here is unknown and stops a removal that reaches it.
"""

from __future__ import annotations

from keras.src.ops import nn as knn
from keras.src.ops import numpy as knp

from ..layout import Layout
from .base import Call, Rule, register

__all__ = ["ElementwiseOpRule", "SoftmaxOpRule", "ReductionOpRule"]

_UNARY_NN = ("Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSilu", "Silu", "Gelu", "Elu", "Selu",
             "Celu", "LeakyRelu", "Softplus", "Softsign", "LogSigmoid", "HardTanh", "TanhShrink")
_UNARY_NUMPY = ("Abs", "Absolute", "Negative", "Square", "Sqrt", "Exp", "Log", "Tanh", "Sin", "Cos",
                "Clip", "Sign", "Reciprocal", "Floor", "Ceil", "Round", "Copy")

UNARY_OPS = tuple(getattr(knn, n) for n in _UNARY_NN if hasattr(knn, n)) + tuple(
    getattr(knp, n) for n in _UNARY_NUMPY if hasattr(knp, n))


@register(*UNARY_OPS)
class ElementwiseOpRule(Rule):
    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        return [call.inputs[0]]


@register(knn.Softmax, knn.LogSoftmax)
class SoftmaxOpRule(Rule):
    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        rank = len(call.input_shapes[0])
        axis = call.op.axis if call.op.axis is not None else -1
        if axis % rank != rank - 1:
            return [call.inputs[0]]
        reason = "softmax over the channel axis mixes channels"
        ctx.fix(call, call.inputs, reason)
        return [ctx.opaque(call, call.output_shapes[0], reason)]


@register(knp.Mean, knp.Sum, knp.Max, knp.Min)
class ReductionOpRule(Rule):
    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        rank = len(call.input_shapes[0])
        axis = call.op.axis
        axes = [] if axis is None else (list(axis) if isinstance(axis, (list, tuple)) else [axis])
        if axis is not None and (rank - 1) not in [a % rank for a in axes]:
            return [call.inputs[0]]
        reason = "it reduces over the channel axis"
        ctx.fix(call, call.inputs, reason)
        return [ctx.opaque(call, call.output_shapes[0], reason)]
