"""Preprocessing and other per-channel layers: each output channel is a function of its input channel.

* ``Resizing``, ``CenterCrop`` and the spatial augmentations (``RandomFlip``, ``RandomCrop``,
  ``RandomRotation``, ``RandomZoom``, ``RandomTranslation``; identities at inference) move pixels,
  never channels; ``RandomContrast`` and ``RandomBrightness`` act per channel or per value. Their
  layout is their input's (``channels_first`` is refused, as for every layer).
* ``Rescaling``: ``y_c = x_c * scale_c + offset_c``. A scalar ``scale``/``offset`` passes channels
  through; a per-channel one (last axis of size C) is sliced in the config by the kept positions.
* ``Normalization(axis=-1)``: ``y_c = (x_c - mean_c) / sqrt(var_c)``. Adapted, ``mean`` and
  ``variance`` are weights ``(C,)`` (sliced like BN's); given in the constructor they are config
  lists (sliced there). Any other axis mixes positions with channels: refused.
* ``UnitNormalization`` (``x / ||x||`` over the channel axis) and ``RMSNormalization``
  (``x / rms(x) * scale``) take their norm *across* channels, so removing one changes the others:
  approximate, opt-in with ``exact: false``, like ``LayerNormalization``; RMSNorm's ``scale (C,)``
  is sliced. Over axes that leave out the channel axis they act per channel and are exact.
"""

from __future__ import annotations

import keras
import numpy as np

from ..layout import Layout
from .base import Call, Kept, Rule, includes_channel_axis, is_channel_axis, register
from .passthrough import PassThroughRule

__all__ = ["SpatialRule", "RescalingRule", "NormalizationRule", "ChannelNormRule"]

L = keras.layers

SPATIAL = tuple(getattr(L, name) for name in (
    "Resizing", "CenterCrop", "RandomFlip", "RandomCrop", "RandomRotation", "RandomZoom",
    "RandomTranslation", "RandomContrast", "RandomBrightness") if hasattr(L, name))


@register(*SPATIAL)
class SpatialRule(PassThroughRule):
    """Pixels move, channels do not."""


def _per_channel(value, channels: int) -> bool:
    shape = np.shape(value)
    return len(shape) > 0 and shape[-1] == channels and channels > 1


def _sliced(value, positions) -> list:
    return np.take(np.asarray(value), list(positions), axis=-1).tolist()


@register(L.Rescaling)
class RescalingRule(Rule):
    couples_calls = False

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        return [call.inputs[0]]

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        positions = kept.input_positions[0] if kept.input_positions else None
        width = len(call.inputs[0]) if call.inputs[0] is not None else 0
        if positions is None:
            return {}
        return {key: _sliced(config[key], positions) for key in ("scale", "offset")
                if _per_channel(config.get(key), width)}


@register(L.Normalization)
class NormalizationRule(Rule):
    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        if not is_channel_axis(call, call.op.axis):
            return ctx.stop(call, f"it normalizes axis {call.op.axis}, not the channel axis")
        return [call.inputs[0]]

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        if call.inputs[0] is None:
            return {}
        return {"mean": {-1: call.inputs[0]}, "variance": {-1: call.inputs[0]}}

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        positions = kept.input_positions[0] if kept.input_positions else None
        width = len(call.inputs[0]) if call.inputs[0] is not None else 0
        if positions is None:
            return {}
        return {key: _sliced(config[key], positions) for key in ("mean", "variance")
                if config.get(key) is not None and _per_channel(config[key], width)}


_CHANNEL_NORMS = tuple(getattr(L, name) for name in ("UnitNormalization", "RMSNormalization")
                       if hasattr(L, name))


@register(*_CHANNEL_NORMS)
class ChannelNormRule(Rule):
    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        axis = call.op.axis
        if not includes_channel_axis(call, axis):
            return [call.inputs[0]]
        if not is_channel_axis(call, axis):
            return ctx.stop(call, f"it normalizes axes {axis}, across channels and positions")
        ctx.fix(call, call.inputs, "its norm is taken across channels, so removal is not exact "
                "(a rule may opt in with 'exact: false')", approximate=True)
        return [call.inputs[0]]

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        if call.inputs[0] is None or not isinstance(call.op, getattr(L, "RMSNormalization", ())):
            return {}
        if not is_channel_axis(call, call.op.axis):
            return {}
        return {"scale": {-1: call.inputs[0]}}
