"""Stage 4: rebuild the model from a plan, with sliced (or masked) weights.

Keras 3 rejects ``weights`` inside a layer config, so the rebuild is ``keras.models.clone_model``
with a ``clone_function`` that creates each layer from its config with the plan's changes
(``units``, ``filters``, ...). Clone_model walks the graph for us, keeps shared layers shared and
replays raw ``keras.ops`` calls; nested models are cloned here, each on Inputs of the kept channel
counts (``plan.model_inputs``: a nested model's Input has a fixed shape). Weights are then copied variable
by variable (in creation order within each layer, their names checked) and sliced along the plan's
kept positions.

``mode="mask"`` keeps every shape and instead zeroes every weight entry that slicing would delete
(the "selective dropout" answer, done exactly): its outputs equal slice mode's, because every layer
that reads a removed channel reads it through a zeroed weight.
"""

from __future__ import annotations

import re

import keras
import numpy as np
from keras.src.saving.serialization_lib import SafeModeScope

from .errors import ModelError
from .plan import Plan

__all__ = ["emit", "layer_paths"]


def layer_paths(model: keras.Model, prefix: str = "") -> dict[int, str]:
    """``id(layer) -> path`` for every layer, nested models included (``backbone/conv1``)."""
    paths: dict[int, str] = {}
    for layer in model.layers:
        path = prefix + layer.name
        paths.setdefault(id(layer), path)
        if isinstance(layer, keras.Model):
            for key, inner in layer_paths(layer, path + "/").items():
                paths.setdefault(key, inner)
    return paths


def emit(model: keras.Model, plan: Plan, mode: str = "slice") -> keras.Model:
    """Return a new model without the plan's channels (``slice``) or with them zeroed (``mask``)."""
    if mode not in ("slice", "mask"):
        raise ValueError(f"unknown mode {mode!r}")
    changes = {change.path: change for change in plan.layers if change.changed}
    inputs_after = dict(plan.model_inputs) if mode == "slice" else {}
    paths = layer_paths(model)
    pairs: list[tuple[object, object, str]] = []
    clones: dict[int, object] = {}                        # keeps layers shared across nesting

    def clone_layer(layer):
        if not isinstance(layer, keras.layers.Layer):
            return layer                                   # a raw keras.ops call: stateless
        if id(layer) in clones:
            return clones[id(layer)]
        path = paths.get(id(layer), layer.name)
        if isinstance(layer, keras.Model):
            new = clone_nested(layer, path)
        else:
            config = layer.get_config()
            change = changes.get(path)
            if change is not None and mode == "slice":
                config.update(change.config)
            # The config comes from a model already in this process (loaded in safe mode, or
            # built by the caller), so a Lambda's own function may be rebuilt from it.
            with SafeModeScope(False):
                new = layer.__class__.from_config(config)
            pairs.append((layer, new, path))
        clones[id(layer)] = new
        return new

    def clone_nested(nested: keras.Model, path: str) -> keras.Model:
        """A nested model's inputs are fixed-shape Inputs: give them the kept channel counts."""
        shapes = inputs_after.get(path)
        tensors = None
        if shapes is not None:
            tensors = [keras.Input(batch_shape=shape, dtype=tensor.dtype, name=tensor.name)
                       for shape, tensor in zip(shapes, nested.inputs)]
            tensors = tensors[0] if len(tensors) == 1 else tensors
        return keras.models.clone_model(nested, input_tensors=tensors, clone_function=clone_layer)

    try:
        rebuilt = keras.models.clone_model(model, clone_function=clone_layer)
    except Exception as error:  # Keras raises many types; the user needs one line
        raise ModelError(f"could not rebuild the model: {type(error).__name__}: {error}") from error
    for old, new, path in pairs:
        _copy_weights(old, new, changes.get(path), mode, path)
    return rebuilt


_AUTO_NAME = re.compile(r"variable(_\d+)?\Z")


def _copy_weights(old, new, change, mode: str, path: str) -> None:
    """Pair variables in creation order (same class, same config keys), checking their names.

    A variable created without a name gets a process-unique one (``variable_7``), so the clone's
    differs from the original's (ConvNeXt's ``LayerScale``); such a pair is matched by position.
    """
    if len(old.weights) != len(new.weights):
        raise ModelError(f"rebuilt layer '{path}' has {len(new.weights)} variables, the original "
                         f"has {len(old.weights)}")
    for variable, target in zip(old.weights, new.weights):
        if variable.name != target.name and not (
                _AUTO_NAME.match(variable.name) and _AUTO_NAME.match(target.name)):
            raise ModelError(f"rebuilt layer '{path}' has variable '{target.name}' where the "
                             f"original has '{variable.name}'")
        axes = change.slices.get(variable.name, {}) if change is not None else {}
        value = variable.numpy()
        value = _slice(value, axes) if mode == "slice" else _mask(value, axes)
        if tuple(target.shape) != value.shape:
            raise ModelError(f"rebuilt layer '{path}': variable '{variable.name}' has shape "
                             f"{tuple(target.shape)}, sliced weights have {value.shape}")
        target.assign(value)


_LARGE = 1 << 22    # entries: a weight this big is gathered in one step, without intermediates


def _slice(value: np.ndarray, axes: dict) -> np.ndarray:
    if len(axes) > 1 and value.size >= _LARGE:    # VGG16's fc1: 392 MB in, 98 MB out, no 196 MB step
        index = [np.asarray(axes[a], dtype=np.int64) if a in axes else np.arange(n)
                 for a, n in enumerate(value.shape)]
        return value[np.ix_(*index)]
    for axis, kept in axes.items():
        value = np.take(value, np.asarray(kept, dtype=np.int64), axis=axis)
    return value


def _mask(value: np.ndarray, axes: dict) -> np.ndarray:
    for axis, kept in axes.items():
        keep = np.zeros(value.shape[axis], dtype=value.dtype)
        keep[list(kept)] = 1
        shape = [1] * value.ndim
        shape[axis] = value.shape[axis]
        value = value * keep.reshape(shape)
    return value
