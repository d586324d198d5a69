"""Magnitude criteria: how much weight each channel group carries.

A group's magnitude is the norm of every trainable weight its removal deletes: producers' output
slices, consumers' input slices and per-channel parameters (BatchNormalization's ``gamma`` and
``beta``), summed over all coupled members. Every rule declares those slices once, in
``weight_axes`` (weights by path in the layer); so for a weight ``w`` and each declared axis ``a`` carrying layout ``L``::

    per_id[L[i]] += sum over all other axes of |w[..., i, ...]|       (l1; w**2 for l2)

and a group's score is the sum of ``per_id`` over its ids (l1), or its square root (l2).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from .graph import ModelGraph
from .rules import rule_for, weight_paths

__all__ = ["group_scores"]

_CHUNK = 1 << 22    # weight entries read at once: scoring VGG16's fc1 never copies all 400 MB


def group_scores(graph: ModelGraph, criterion: str) -> np.ndarray:
    """Root-indexed magnitude of every group (``l1`` or ``l2``); other entries are zero."""
    per_id = np.zeros(graph.num_ids)
    for calls in graph.calls_by_path.values():
        call = calls[0]
        rule = rule_for(call.op)
        if rule is None:
            continue
        declared = rule.weight_axes(call)
        for path, variable in weight_paths(call.op).items():
            axes = declared.get(path)
            if axes is None or not variable.trainable:
                continue
            sums = _axis_sums(variable, list(axes), criterion)
            for axis, layout in axes.items():
                np.add.at(per_id, layout.ids, sums[axis % len(variable.shape)])
    grouped = np.bincount(graph.root, weights=per_id, minlength=graph.num_ids)
    return grouped if criterion == "l1" else np.sqrt(grouped)


def _axis_sums(variable, axes: list[int], criterion: str) -> dict[int, np.ndarray]:
    """Per axis in ``axes``: the sum of ``|w|`` (l1) or ``w**2`` (l2) over every other axis.

    Reads the variable a block of leading-axis rows at a time, in float64.
    """
    shape = tuple(int(d) for d in variable.shape)
    ndim = len(shape)
    axes = sorted({axis % ndim for axis in axes})
    sums = {axis: np.zeros(shape[axis]) for axis in axes}
    magnitude = np.abs if criterion == "l1" else np.square
    rows = max(1, _CHUNK // max(1, math.prod(shape[1:])))
    for start in range(0, shape[0], rows):
        part = variable if rows >= shape[0] else variable[start:start + rows]
        block = magnitude(keras.ops.convert_to_numpy(part))     # accumulated in float64:
        for axis in axes:
            other = tuple(a for a in range(ndim) if a != axis)
            if axis == 0:
                sums[0][start:start + len(block)] = block.sum(axis=other, dtype=np.float64)
            else:
                sums[axis] += block.sum(axis=other, dtype=np.float64)
    return sums
