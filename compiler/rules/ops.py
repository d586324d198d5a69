"""Raw ``keras.ops`` calls recorded in a functional graph (``model.operations``, not ``model.layers``).

Keras 3 turns ``tf.nn.relu(x)``-style code on symbolic tensors into Operation nodes: ``ops.relu``,
``ops.sigmoid``, ``ops.abs`` ... are applied element by element, so channel ``c`` of the output is
a function of channel ``c`` of the input (pass-through). Reductions (``ops.mean(x, axis=(1, 2))``)
pass channels through while the channel axis is not reduced. Binary elementwise ops live in
``merge.py``; anything not listed here is unknown and stops a removal that reaches it.
"""

from __future__ import annotations

from ..compat import ops_nn as knn
from ..compat import ops_numpy as knp
from ..layout import Layout
from .base import Call, Rule, includes_channel_axis, register

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
        axis = call.op.axis if call.op.axis is not None else -1
        if not includes_channel_axis(call, axis):
            return [call.inputs[0]]
        return ctx.stop(call, "softmax over the channel axis mixes channels")


@register(knp.Mean, knp.Sum, knp.Max, knp.Min)
class ReductionOpRule(Rule):
    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        if not includes_channel_axis(call, call.op.axis):
            return [call.inputs[0]]
        return ctx.stop(call, "it reduces over the channel axis")
