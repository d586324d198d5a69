"""Multi-head attention: its heads are a named channel block inside the layer.

``keras.layers.MultiHeadAttention(num_heads=H, key_dim=dk, value_dim=dv)`` called on query
``(.., Dq)``, value ``(.., Dv)`` and key ``(.., Dk)`` (key defaults to value) holds, by path:

* ``query/kernel (Dq, H, dk)``, ``key/kernel (Dk, H, dk)``, ``value/kernel (Dv, H, dv)`` (and, with
  ``use_gate``, ``gate/kernel (Dq, H, dv)``), biases ``(H, dk|dv)``;
* ``attention_output/kernel (H, dv, O)`` and ``attention_output/bias (O,)``, ``O`` being
  ``output_shape`` or, by default, ``Dq``.

It computes ``y = sum_h A_h(q_h, k_h) v_h W_o[h] + b_o``. Removing head ``h`` (``unit: heads``)
deletes ``[:, h]`` of every projection kernel, ``[h]`` of their biases and ``W_o[h]``, and
``num_heads`` drops by one: exactly the original with head ``h``'s value projection zeroed (its
attention output ``A_h · 0`` is then 0, whatever ``A_h``). Query, key and value channels are rows
of their projection kernels (a removed input channel is a deleted row: read as zero), and the
outputs are fresh channels, like a Dense's. Attention masks are not channels: they are fixed.
A call that returns its attention scores ``(B, H, T, S)`` fixes its heads: removing one would
change that tensor's shape, not zero a channel.
"""

from __future__ import annotations

from math import prod

import keras

from ..layout import Layout
from .base import Call, Kept, Rule, register

__all__ = ["MultiHeadAttentionRule"]

HEADS = "heads"
_MASKS = ("query_mask", "value_mask", "key_mask", "attention_mask")


def _sources(call: Call) -> tuple[Layout | None, Layout | None, Layout | None]:
    """The layouts of query, value and key (key defaults to value), by argument name or place."""
    query = call.input("query", "0")
    value = call.input("value", "1")
    key = call.input("key", "2") or value
    return query, value, key


def _positions(shape: tuple) -> int:
    dims = shape[1:-1]
    return 1 if any(d is None for d in dims) else int(prod(dims))


@register(keras.layers.MultiHeadAttention)
class MultiHeadAttentionRule(Rule):
    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        masks = [layout for layout, name in zip(call.inputs, call.input_names) if name in _MASKS]
        ctx.fix(call, masks, "it is an attention mask, not channels")
        heads = ctx.fresh(call, call.op.num_heads, unit=HEADS)
        if len(call.output_shapes) > 1:
            ctx.fix(call, [heads], "it returns its attention scores, whose head axis would shrink")
        output_shape = call.op.get_config().get("output_shape")
        if isinstance(output_shape, (list, tuple)) and len(output_shape) > 1:
            return ctx.stop(call, f"its output_shape {tuple(output_shape)} has several axes")
        out = ctx.fresh(call, call.output_shapes[0][-1])
        ctx.expose(call, out, "attention_output")
        return [out] + [None] * (len(call.output_shapes) - 1)     # attention scores: no channels

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        heads, out = call.units.get(HEADS), call.outputs[0]
        if heads is None or out is None:
            return {}
        query, value, key = _sources(call)
        axes = {
            "query/kernel": {1: heads}, "key/kernel": {1: heads}, "value/kernel": {1: heads},
            "gate/kernel": {1: heads}, "query/bias": {0: heads}, "key/bias": {0: heads},
            "value/bias": {0: heads}, "gate/bias": {0: heads},
            "attention_output/kernel": {0: heads, -1: out}, "attention_output/bias": {0: out},
        }
        for weight, source in (("query/kernel", query), ("gate/kernel", query),
                               ("key/kernel", key), ("value/kernel", value)):
            if source is not None:
                axes[weight][0] = source
        return axes

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        changes = {"num_heads": kept.units[HEADS]}
        position = call.input_position("query", "0")
        query_width = None if position is None else kept.inputs[position]
        if config.get("output_shape") is not None or kept.outputs[0] != query_width:
            changes["output_shape"] = kept.outputs[0]
        return changes

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        """Projections, the score and value products (per head), and the output projection."""
        query_shape = call.input_shapes[call.input_position("query", "0") or 0]
        value_position = call.input_position("value", "1")
        value_shape = query_shape if value_position is None else call.input_shapes[value_position]
        tq, tv = _positions(query_shape), _positions(value_shape)
        heads, key_dim = weight_shapes["query/kernel"][1:]
        value_dim = weight_shapes["value/kernel"][2]
        total = tq * prod(weight_shapes["query/kernel"]) + tv * prod(weight_shapes["key/kernel"])
        total += tv * prod(weight_shapes["value/kernel"])
        total += tq * prod(weight_shapes.get("gate/kernel", (0,)))
        total += tq * tv * heads * (key_dim + value_dim)
        total += tq * prod(weight_shapes["attention_output/kernel"])
        return total
