"""Rebuilding keras-hub backbones: the same class when every block keeps the same widths.

``keras.models.clone_model`` turns a ``BertBackbone`` into a plain ``Functional`` and fails on
``LlamaBackbone`` and ``Qwen3Backbone`` (their blocks' configs do not round-trip), while every
backbone's own ``get_config``/``from_config`` works. So when a plan leaves every block of a
backbone with the same widths ("25% of every FFN"), the backbone is rebuilt from its own config
with those widths (``intermediate_dim``, ``num_heads``/``num_query_heads``/``num_key_value_heads``,
``head_dim``) and each weight gets the original's array sliced by the plan, paired by layer name
and weight path: ``type(pruned)`` is the original's class, and ``save_to_preset``/``from_preset``
work. Otherwise (different widths per block, or fewer heads in a backbone whose config cannot say
their size) ``emit`` clones the graph into a functional model of the same block classes, except
that a block whose class cannot take the plan's ``head_dim``, or whose config does not round-trip
(Llama's, Qwen3's), becomes prunec's version of it (``compiler.hub_blocks``: the model then loads
after ``import compiler.hub_blocks``); ``rebuild_note`` says in the plan which it will be. A task
(``BertTextClassifier``) is rebuilt as its own class around a backbone of its own class, or
refused at plan time.

keras-hub is imported only when a model is one of its classes.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import keras
import numpy as np

from .errors import ConstraintError, RebuildError
from .rules import rule_for, weight_paths
from .rules.hub import HubBlockRule, HubLayerRule, block_prefixes, shape_of

__all__ = ["is_backbone", "is_task", "uniform_config", "rebuild_backbone", "rebuild_task",
           "rebuild_note"]


def is_backbone(model) -> bool:
    """Whether ``model`` is a keras-hub ``Backbone`` (without importing keras-hub otherwise)."""
    hub = sys.modules.get("keras_hub")
    return hub is not None and isinstance(model, hub.models.Backbone)


#: why a backbone with fewer heads per block cannot keep its class
_DERIVED = "a {name} derives its blocks' head size from its hidden size"


def _blocks(model) -> list:
    return [layer for layer in model.layers if isinstance(rule_for(layer), HubBlockRule)]


def uniform_config(model, changes: dict) -> tuple[dict | None, str]:
    """The backbone's config with the plan's widths, or ``(None, why not)``.

    ``changes`` is ``layer name -> LayerChange`` of the changed layers.
    """
    blocks = _blocks(model)
    if not blocks:
        return None, "it has no keras-hub transformer blocks prunec knows"
    others = sorted(set(changes) - {block.name for block in blocks})
    if others:
        return None, f"layers outside its blocks change ({', '.join(others[:3])})"
    configs = [changes[block.name].config if block.name in changes else {} for block in blocks]
    if any(config != configs[0] for config in configs):
        return None, "its blocks keep different widths"
    config = _own_config(model)
    missing = sorted(key for key in configs[0] if key not in config)
    if "head_dim" in missing:
        return None, _DERIVED.format(name=type(model).__name__)
    if missing:
        return None, f"its config has no {', '.join(repr(k) for k in missing)}"
    config.update(configs[0])
    return config, ""


def _own_config(model) -> dict:
    """``model.get_config()``, plus every constructor argument it omits that the backbone holds
    as a plain value of the same name (``LlamaBackbone.get_config`` omits ``tie_word_embeddings``:
    rebuilt from it, a tied Llama would come back untied, with a second embedding matrix)."""
    import inspect

    config = model.get_config()
    parameters = inspect.signature(type(model).__init__).parameters
    for name, parameter in parameters.items():
        if name == "self" or name in config or parameter.kind not in (
                parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            continue
        value = getattr(model, name, None)
        if isinstance(value, (bool, int, float, str)):
            config[name] = value
    return config


def rebuild_note(model, changes: dict) -> str | None:
    """One line for the plan: which rebuild ``emit`` will do, for a keras-hub backbone or a
    model holding keras-hub blocks (for a task: nothing, or a ConstraintError when its backbone
    would not keep its class)."""
    if is_task(model):
        refusal = _task_refusal(model, changes)
        if refusal is not None:
            raise refusal
        return None
    if "keras_hub" not in sys.modules:
        return None
    name = type(model).__name__
    config, why = uniform_config(model, changes) if is_backbone(model) else (None, "")
    if config is not None:
        return f"rebuild: a {name} from its own config (every block keeps the same widths)"
    from .hub_blocks import round_trips

    classes = _rebuilt_classes(model, changes)
    prunec = sorted({cls.__name__ for cls in classes.values()
                     if cls.__module__ == "compiler.hub_blocks"})
    load = "; to load it: import compiler.hub_blocks, then keras.saving.load_model"
    if not is_backbone(model):
        return f"rebuild: keras-hub layers as prunec's ({', '.join(prunec)}){load}" \
            if prunec else None
    for block in _blocks(model):
        if block.name in changes and classes[block.name] is type(block) and not round_trips(block):
            raise ConstraintError(
                f"'{block.name}' ({type(block).__name__}) would have to be rebuilt on its own "
                f"({why}), but its config does not round-trip in this keras-hub version",
                hint=f"give every block the same removal, so that the {name} is rebuilt from "
                     "its own config")
    if prunec:
        return (f"rebuild: a functional model of prunec's blocks ({', '.join(prunec)}), not a "
                f"{name}: {why}{load}")
    return f"rebuild: a functional model of the same block classes, not a {name}: {why}"


def _rebuilt_classes(model, changes: dict, prefix: str = "") -> dict[str, type]:
    """Layer path -> the class ``emit`` rebuilds it as in a functional model, for the keras-hub
    layers prunec knows (every other layer keeps its class), nested models included."""
    classes = {}
    for layer in model.layers:
        path = prefix + layer.name
        rule = rule_for(layer)
        if isinstance(rule, (HubBlockRule, HubLayerRule)):
            change = changes.get(path)
            config = {**rule.layer_config(layer), **(change.config if change is not None else {})}
            classes[path] = rule.rebuilt_class(layer, config)
        elif isinstance(layer, keras.Model) and not is_backbone(layer):
            classes.update(_rebuilt_classes(layer, changes, path + "/"))
    return classes


def _task_refusal(model, changes: dict) -> ConstraintError | None:
    """Why a task cannot be rebuilt around its pruned backbone (which must keep its class)."""
    backbone = model.backbone
    prefix = backbone.name + "/"
    inner = {path[len(prefix):]: change for path, change in changes.items()
             if path.startswith(prefix)}
    if not inner:
        return None
    config, why = uniform_config(backbone, inner)
    if config is not None:
        return None
    task, name = type(model).__name__, type(backbone).__name__
    heads = [path for path, change in inner.items() if "head_dim" in change.config]
    if heads and "head_dim" not in backbone.get_config():
        block = backbone.get_layer(heads[0])
        shape = shape_of(block)
        attention = f"{prefix}{heads[0]}/{block_prefixes(block, shape)[0]}{shape.attention}"
        return ConstraintError(
            f"{task}: removing heads of '{attention}' needs prunec's head-sized blocks, which a "
            f"{name} cannot hold ({_DERIVED.format(name=name)}), and a task is rebuilt only "
            "around a backbone of its own class",
            hint="prune the heads of its backbone alone (model.backbone, rebuilt as a "
                 "functional model of prunec's blocks), or its FFN neurons")
    return ConstraintError(
        f"{task}: its backbone '{backbone.name}' would not keep its class ({why}), and a task "
        "is rebuilt only around a backbone of its own class",
        hint="give every block the same removal")


def rebuild_backbone(model, plan, reshape) -> keras.Model | None:
    """The backbone rebuilt as its own class with sliced weights, or None when its blocks do not
    all keep the same widths. ``reshape(value, axes)`` slices (or masks) one array."""
    changes = {change.path: change for change in plan.layers if change.changed}
    masking = reshape.__name__ == "masked"
    config, _ = uniform_config(model, {} if masking else changes)
    if config is None:
        return None
    try:
        rebuilt = type(model).from_config(config)
    except Exception as error:     # keras-hub raises many types; the user needs one line
        raise RebuildError(f"could not rebuild {type(model).__name__} from its config: "
                           f"{type(error).__name__}: {' '.join(str(error).split())[:300]}") from error
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            target = rebuilt.get_layer(layer.name)
        except ValueError:
            raise RebuildError(f"rebuilt {type(model).__name__} has no layer '{layer.name}'") from None
        change = changes.get(layer.name)
        before, after = weight_paths(layer), weight_paths(target)
        if set(before) != set(after):
            raise RebuildError(f"rebuilt layer '{layer.name}' has weights {sorted(after)}, the "
                               f"original {sorted(before)}")
        for path, variable in before.items():
            axes = change.slices.get(path, {}) if change is not None else {}
            value = reshape(keras.ops.convert_to_numpy(variable.value), axes)
            if tuple(after[path].shape) != value.shape:
                raise RebuildError(f"rebuilt layer '{layer.name}': weight '{path}' has shape "
                                   f"{tuple(after[path].shape)}, the sliced original has {value.shape}")
            after[path].assign(np.asarray(value, dtype=after[path].dtype))
    return rebuilt


def is_task(model) -> bool:
    """Whether ``model`` is a keras-hub ``Task`` (a classifier or CausalLM around a backbone)."""
    hub = sys.modules.get("keras_hub")
    return hub is not None and isinstance(model, hub.models.Task) and \
        is_backbone(getattr(model, "backbone", None))


def rebuild_task(model, plan, reshape) -> keras.Model:
    """The task rebuilt around its pruned backbone (its own class), with its preprocessor kept
    and its other layers' weights copied; a one-line error when that cannot be done."""
    backbone = model.backbone
    prefix = backbone.name + "/"
    changes = [change for change in plan.layers if change.changed]
    outside = [change.path for change in changes if not change.path.startswith(prefix)]
    if outside:
        raise ConstraintError(
            f"'{outside[0]}' of {type(model).__name__} changes outside its backbone "
            f"'{backbone.name}'; prunec rebuilds a keras-hub task only around a pruned backbone",
            hint="prune layers inside the backbone only")
    inner = replace(plan, layers=tuple(replace(change, path=change.path[len(prefix):])
                                       for change in plan.layers if change.path.startswith(prefix)))
    pruned = rebuild_backbone(backbone, inner, reshape)
    if pruned is None:
        raise _task_refusal(model, {change.path: change for change in changes})
    config = {key: value for key, value in model.get_config().items()
              if key not in ("backbone", "preprocessor")}
    try:
        rebuilt = type(model)(backbone=pruned, preprocessor=model.preprocessor, **config)
    except Exception as error:
        raise RebuildError(f"could not rebuild {type(model).__name__} around its pruned backbone: "
                           f"{type(error).__name__}: {' '.join(str(error).split())[:300]}") from error
    for layer in model.layers:
        if layer is backbone or not layer.weights:
            continue
        target = rebuilt.get_layer(layer.name)
        after = weight_paths(target)
        for path, variable in weight_paths(layer).items():
            after[path].assign(variable.value)
    return rebuilt
