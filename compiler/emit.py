"""Stage 4: rebuild the model from a plan, with sliced (or masked) weights.

Keras 3 rejects ``weights`` inside a layer config, so the rebuild is ``keras.models.clone_model``
with a ``clone_function`` that creates each layer from its config with the plan's changes
(``units``, ``filters``, ``num_heads`` ...). Clone_model walks the graph for us, keeps shared
layers shared and replays raw ``keras.ops`` calls -- the same operation, with the arguments its
node recorded, unless the plan gives it a new config (``ops.split``'s sections: a new operation)
or new call arguments (``x[..., a:b]``'s key: swapped in by a ``call_function``); nested models
are cloned here, each on Inputs of the kept channel counts (``plan.model_inputs``: a nested model's Input has a fixed shape).

The rebuilt layers create their variables *uninitialised* (``compat.deferred_variables``); each
then gets its value once, straight from the original's array sliced along the plan's kept
positions, paired by its path in the layer (``query/kernel``). No random initialiser runs and no
weight is written twice: that was half of a rebuild's time.

``mode="mask"`` keeps every shape and instead zeroes every weight entry that slicing would delete
(the "selective dropout" answer, done exactly): its outputs equal slice mode's, because every layer
that reads a removed channel reads it through a zeroed weight.
"""

from __future__ import annotations

import re

import keras
import numpy as np

from .compat import SafeModeScope, deferred_variables, initialize_variable
from .errors import RebuildError
from .hub import is_backbone, is_task, rebuild_backbone, rebuild_task
from .modelio import compile_config
from .plan import Plan
from .rules import rule_for, weight_paths

__all__ = ["emit", "layer_paths", "sliced", "masked"]


def layer_paths(model: keras.Model, prefix: str = "") -> dict[int, str]:
    """``id(layer) -> path`` for every layer, nested models included (``backbone/conv1``)."""
    paths: dict[int, str] = {}
    raw_ops = [op for op in getattr(model, "operations", ()) if not isinstance(op, keras.layers.Layer)]
    for layer in list(model.layers) + raw_ops:
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
    if is_task(model):           # keras-hub: the task around its backbone, preprocessor kept
        return rebuild_task(model, plan, sliced if mode == "slice" else masked)
    if is_backbone(model):       # keras-hub: its own class when every block keeps one width
        rebuilt = rebuild_backbone(model, plan, sliced if mode == "slice" else masked)
        if rebuilt is not None:
            return rebuilt
    inputs_after = dict(plan.model_inputs) if mode == "slice" else {}
    paths = layer_paths(model)
    pairs: list[tuple[object, object, str]] = []
    clones: dict[int, object] = {}                        # keeps layers shared across nesting

    arguments: dict[int, dict] = {}                        # id(rebuilt raw op) -> new arguments

    def clone_layer(layer):
        if not isinstance(layer, keras.layers.Layer):
            return clone_op(layer)
        if id(layer) in clones:
            return clones[id(layer)]
        path = paths.get(id(layer), layer.name)
        if isinstance(layer, keras.Model):
            new = clone_nested(layer, path)
        else:
            rule = rule_for(layer)
            config = rule.layer_config(layer) if rule is not None else layer.get_config()
            change = changes.get(path)
            if change is not None and mode == "slice":
                config = _changed(config, change.config)
            # The config comes from a model already in this process (loaded in safe mode, or
            # built by the caller), so a Lambda's own function may be rebuilt from it.
            cls = rule.rebuilt_class(layer, config) if rule is not None else layer.__class__
            with SafeModeScope(False):
                new = cls.from_config(config)
            pairs.append((layer, new, path))
        clones[id(layer)] = new
        return new

    def clone_op(op):
        """A raw keras.ops call is stateless and reused, unless the plan gives it a new config
        (a split's sections) or new call arguments (a slice's key), applied by ``call_op``."""
        change = changes.get(paths.get(id(op), op.name)) if mode == "slice" else None
        if change is None:
            return op
        new = op
        if change.config:
            new = op.__class__.from_config({**op.get_config(), **change.config})
        if change.arguments:
            arguments[id(new)] = change.arguments
        return new

    def call_op(op, *args, **kwargs):
        given = arguments.get(id(op))
        if given:
            args = tuple(given.get(i, arg) for i, arg in enumerate(args))
        return op(*args, **kwargs)

    def clone(functional: keras.Model, **options) -> keras.Model:
        if not isinstance(functional, keras.Sequential):   # Sequential takes no call_function
            options["call_function"] = call_op
        # clone_model compiles the clone of a compiled model, which would create optimizer
        # variables inside the deferred-variables scope (refused): compile it afterwards instead
        compiled = getattr(functional, "compiled", False)
        if compiled:
            functional.compiled = False
        try:
            return keras.models.clone_model(functional, clone_function=clone_layer, **options)
        finally:
            if compiled:
                functional.compiled = True

    def clone_nested(nested: keras.Model, path: str) -> keras.Model:
        """A nested model's inputs are fixed-shape Inputs: give them the kept channel counts."""
        shapes = inputs_after.get(path)
        tensors = None
        if shapes is not None:
            tensors = [keras.Input(batch_shape=shape, dtype=tensor.dtype, name=tensor.name)
                       for shape, tensor in zip(shapes, nested.inputs)]
            tensors = tensors[0] if len(tensors) == 1 else tensors
        return clone(nested, input_tensors=tensors)

    reshape = sliced if mode == "slice" else masked
    try:
        with deferred_variables() as created:
            rebuilt = clone(model)
    except Exception as error:  # Keras raises many types; the user needs one line
        raise RebuildError(f"could not rebuild the model: {type(error).__name__}: "
                           f"{' '.join(str(error).split())[:300]}",
                           hint="this is a prunec bug, or a register_rule declaration that does "
                                "not match its layer: please report it with the spec and model") \
            from error
    values: dict[int, np.ndarray] = {}
    for old, new, path in pairs:
        change = changes.get(path)
        for target, variable, weight in _paired_weights(old, new, path):
            axes = change.slices.get(weight, {}) if change is not None else {}
            value = reshape(keras.ops.convert_to_numpy(variable.value), axes)
            if tuple(target.shape) != value.shape:
                raise RebuildError(f"rebuilt layer '{path}': weight '{weight}' has shape "
                                   f"{tuple(target.shape)}, the sliced original has {value.shape}")
            values[id(target)] = value
    deferred = {id(variable) for variable in created.created}
    for variable in created.created:          # seeds and the like keep their own initialiser
        initialize_variable(variable, values.pop(id(variable), None))
    for old, new, path in pairs:              # a layer that built eagerly: assign as usual
        for variable in new.weights:
            if id(variable) in values and id(variable) not in deferred:
                variable.assign(values.pop(id(variable)))
        if hasattr(new, "finalize_state") and new.weights:
            new.finalize_state()              # state derived from weights (Normalization's mean)
    _compile_like(model, rebuilt)
    return rebuilt


def _changed(config: dict, changes: dict) -> dict:
    """``config`` with ``changes``; a dict change to a serialized layer inside the config (a
    TimeDistributed's ``layer``, an RNN's ``cell``) changes keys of that layer's own config, and
    drops its ``build_config``: its shapes change, and its wrapper builds it when called."""
    config = dict(config)
    for key, value in changes.items():
        inner = config.get(key)
        if isinstance(value, dict) and isinstance(inner, dict) and isinstance(inner.get("config"), dict):
            value = {**{k: v for k, v in inner.items() if k != "build_config"},
                     "config": _changed(inner["config"], value)}
        config[key] = value
    return config


def _compile_like(model: keras.Model, rebuilt: keras.Model) -> None:
    """Give the rebuilt model the original's compile configuration (loss, metrics, optimizer
    class; not the optimizer's state, which belonged to the old shapes). One that cannot be
    rebuilt here (a custom loss not registered in this process) is left out: the model is then
    compiled by its user, as any loaded-uncompiled model."""
    config = compile_config(model)
    if config is None or rebuilt.compiled:
        return
    try:
        rebuilt.compile_from_config(config)
    except Exception:  # Keras raises many types for objects it cannot deserialize
        pass


_AUTO_NAME = re.compile(r"(.*/)?variable(_\d+)?\Z")


def _paired_weights(old, new, path: str):
    """``(new variable, old variable, weight path)`` for every weight, paired by path.

    A variable created without a name gets a process-unique one (``variable_7``), so the clone's
    differs from the original's (ConvNeXt's ``LayerScale``); such weights pair in creation order.
    """
    before, after = weight_paths(old), weight_paths(new)
    if len(before) != len(after):
        raise RebuildError(f"rebuilt layer '{path}' has {len(after)} weights, the original has "
                           f"{len(before)}")
    unnamed_before = [p for p in before if _AUTO_NAME.match(p) and p not in after]
    unnamed_after = [p for p in after if _AUTO_NAME.match(p) and p not in before]
    renamed = dict(zip(unnamed_after, unnamed_before))
    for weight, target in after.items():
        source = renamed.get(weight, weight)
        if source not in before:
            raise RebuildError(f"rebuilt layer '{path}' has weight '{weight}', which the original "
                               f"does not have")
        yield target, before[source], source


_LARGE = 1 << 22    # entries: a weight this big is gathered in one step, without intermediates


def sliced(value: np.ndarray, axes: dict) -> np.ndarray:
    """``value`` keeping only the given positions along each axis of ``axes``."""
    if len(axes) > 1 and value.size >= _LARGE:    # VGG16's fc1: 392 MB in, 98 MB out, no 196 MB step
        index = [np.asarray(axes[a], dtype=np.int64) if a in axes else np.arange(n)
                 for a, n in enumerate(value.shape)]
        return value[np.ix_(*index)]
    for axis, kept in axes.items():
        value = np.take(value, np.asarray(kept, dtype=np.int64), axis=axis)
    return value


def masked(value: np.ndarray, axes: dict) -> np.ndarray:
    """``value`` with every entry off the given positions (along any axis of ``axes``) zeroed."""
    for axis, kept in axes.items():
        keep = np.zeros(value.shape[axis], dtype=value.dtype)
        keep[list(kept)] = 1
        shape = [1] * value.ndim
        shape[axis] = value.shape[axis]
        value = value * keep.reshape(shape)
    return value
