"""Stage 4: rebuild the model from a plan, with sliced (or masked) weights.

Keras 3 rejects ``weights`` inside a layer config, so the rebuild is ``keras.models.clone_model``
with a ``clone_function`` that creates each layer from its config with the plan's changes
(``units``, ``filters``, ...). Clone_model walks the graph for us, keeps shared layers shared,
recurses into nested models and replays raw ``keras.ops`` calls. Weights are then copied variable
by variable, matched by *name* within each layer, and sliced along the plan's kept positions.

``mode="mask"`` keeps every shape and instead zeroes every weight entry that slicing would delete
(the "selective dropout" answer, done exactly): its outputs equal slice mode's, because every layer
that reads a removed channel reads it through a zeroed weight.
"""

from __future__ import annotations

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
    paths = layer_paths(model)
    pairs: list[tuple[object, object, str]] = []

    clones: dict[int, object] = {}

    def clone_layer(layer):
        if not isinstance(layer, keras.layers.Layer):
            return layer                                   # a raw keras.ops call: stateless
        if isinstance(layer, keras.Model):
            return layer                                   # rebuilt in call_layer, on its new inputs
        if id(layer) in clones:                            # shared, possibly across nested models
            return clones[id(layer)]
        path = paths.get(id(layer), layer.name)
        config = layer.get_config()
        change = changes.get(path)
        if change is not None and mode == "slice":
            config.update(change.config)
        # The config comes from a model already in this process (loaded in safe mode, or built
        # by the caller), so a Lambda's own function may be rebuilt from it.
        with SafeModeScope(False):
            new = layer.__class__.from_config(config)
        pairs.append((layer, new, path))
        clones[id(layer)] = new
        return new

    def call_layer(layer, *args, **kwargs):
        if isinstance(layer, keras.Model):
            if id(layer) not in clones:
                clones[id(layer)] = rebuild(layer, keras.tree.flatten(args[0]))
            layer = clones[id(layer)]
        return layer(*args, **kwargs)

    def rebuild(model, inputs):
        """``model`` rebuilt for inputs shaped like ``inputs``: a nested model's input loses the
        channels removed before it, so its input layers cannot be copied from the original."""
        fresh = [keras.Input(batch_shape=tuple(new.shape), dtype=old.dtype,
                             name=old._keras_history[0].name)       # the InputLayer's name
                 for old, new in zip(model.inputs, inputs)]
        if isinstance(model, keras.Sequential):
            x, layers = fresh[0], []
            for layer in model.layers:
                x = call_layer(clone_layer(layer), x)
                layers.append(clones.get(id(layer), layer))
            return keras.Sequential([fresh[0], *layers], name=model.name, trainable=model.trainable)
        return keras.models.clone_model(
            model, input_tensors=keras.tree.pack_sequence_as(model.input, fresh),
            clone_function=clone_layer, call_function=call_layer)

    try:
        rebuilt = rebuild(model, model.inputs)
    except Exception as error:  # Keras raises many types; the user needs one line
        raise ModelError(f"could not rebuild the model: {type(error).__name__}: {error}") from error
    for old, new, path in pairs:
        _copy_weights(old, new, changes.get(path), mode, path)
    return rebuilt


def _copy_weights(old, new, change, mode: str, path: str) -> None:
    new_by_name: dict[str, list] = {}
    for variable in new.weights:
        new_by_name.setdefault(variable.name, []).append(variable)
    seen: dict[str, int] = {}
    for variable in old.weights:
        occurrence = seen.get(variable.name, 0)
        seen[variable.name] = occurrence + 1
        candidates = new_by_name.get(variable.name, [])
        if occurrence >= len(candidates):
            raise ModelError(f"rebuilt layer '{path}' has no variable '{variable.name}'")
        value = np.asarray(variable.numpy())
        axes = change.slices.get(variable.name, {}) if change is not None else {}
        value = _slice(value, axes) if mode == "slice" else _mask(value, axes)
        target = candidates[occurrence]
        if tuple(target.shape) != value.shape:
            raise ModelError(f"rebuilt layer '{path}': variable '{variable.name}' has shape "
                             f"{tuple(target.shape)}, sliced weights have {value.shape}")
        target.assign(value)


def _slice(value: np.ndarray, axes: dict) -> np.ndarray:
    for axis, kept in axes.items():
        value = np.take(value, np.asarray(kept, dtype=np.int64), axis=axis)
    return value


def _mask(value: np.ndarray, axes: dict) -> np.ndarray:
    value = value.copy()
    for axis, kept in axes.items():
        keep = np.zeros(value.shape[axis], dtype=bool)
        keep[list(kept)] = True
        shape = [1] * value.ndim
        shape[axis] = value.shape[axis]
        value = value * keep.reshape(shape).astype(value.dtype)
    return value
