"""Normalization layers: per-channel affine maps, and the ones whose statistics mix channels.

* ``BatchNormalization(axis=-1)``: ``y_c = gamma_c (x_c - mean_c) / sqrt(var_c + eps) + beta_c``.
  Every variable (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``; which exist depends on
  ``scale``/``center``) is indexed by the channel: removal slices them all, exactly.
* ``LayerNormalization`` and ``GroupNormalization`` compute their mean and variance *across*
  channels, so removing a channel changes every other channel's output: not exact. They are
  refused unless a rule opts in with ``exact: false``; then ``gamma``/``beta`` are sliced like BN's
  and the plan marks the group approximate.
"""

from __future__ import annotations

import keras

from ..layout import Layout
from .base import Call, Rule, is_channel_axis, register

__all__ = ["BatchNormRule", "StatisticsNormRule"]

_PER_CHANNEL = ("gamma", "beta", "moving_mean", "moving_variance")


@register(keras.layers.BatchNormalization)
class BatchNormRule(Rule):
    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        if not is_channel_axis(call, call.op.axis):
            reason = f"it normalizes axis {call.op.axis}, not the channel axis"
            return ctx.stop(call, reason)
        return [call.inputs[0]]

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        if call.inputs[0] is None:
            return {}
        return {name: {0: call.inputs[0]} for name in _PER_CHANNEL}


@register(keras.layers.LayerNormalization, keras.layers.GroupNormalization)
class StatisticsNormRule(Rule):
    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        reason = None
        if isinstance(call.op, keras.layers.LayerNormalization) and not is_channel_axis(call, call.op.axis):
            reason = f"it normalizes axis {call.op.axis}, not only the channel axis"
        if isinstance(call.op, keras.layers.GroupNormalization) and call.op.groups != 1:
            reason = f"its groups ({call.op.groups}) would have to be regrouped"
        if reason:
            return ctx.stop(call, reason)
        ctx.fix(call, call.inputs, "its mean and variance are taken across channels, so removal "
                "is not exact (a rule may opt in with 'exact: false')", approximate=True)
        return [call.inputs[0]]

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        if call.inputs[0] is None:
            return {}
        return {"gamma": {0: call.inputs[0]}, "beta": {0: call.inputs[0]}}
