"""Every private Keras import prunec needs, in one place.

Keras 3 keeps some classes prunec must recognise (the convolution bases, the raw ``keras.ops``
operation classes, ConvNeXt's ``LayerScale``) and two mechanisms it must use (safe-mode scoping
while rebuilding, and variables created without initialising them) under ``keras.src``. When a
Keras release moves one of them, this module is the only one to change.
"""

from __future__ import annotations

from keras.src.applications.convnext import LayerScale
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer
from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import StatelessScope
from keras.src.layers.convolutional.base_conv import BaseConv
from keras.src.layers.convolutional.base_conv_transpose import BaseConvTranspose
from keras.src.layers.convolutional.base_depthwise_conv import BaseDepthwiseConv
from keras.src.layers.convolutional.base_separable_conv import BaseSeparableConv
from keras.src.ops import core as ops_core
from keras.src.ops import nn as ops_nn
from keras.src.ops import numpy as ops_numpy
from keras.src.saving.serialization_lib import SafeModeScope

__all__ = ["LayerScale", "CustomScaleLayer", "BaseConv", "BaseConvTranspose", "BaseDepthwiseConv",
           "BaseSeparableConv", "ops_core", "ops_nn", "ops_numpy", "SafeModeScope",
           "deferred_variables", "initialize_variable", "sublayers", "run_graph", "named_weights"]


class deferred_variables:
    """Within this block, layers that build create their variables *without* initialising them.

    On exit, ``created`` lists those variables; each must then get a value from
    ``initialize_variable`` (prunec gives every rebuilt weight its sliced array directly, so no
    random initialiser runs and no array is written twice).
    """

    def __enter__(self) -> "deferred_variables":
        self._before = list(global_state.get_global_attribute("uninitialized_variables", []) or [])
        self._scope = StatelessScope(initialize_variables=False)
        self._scope.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._scope.__exit__(*exc)
        pending = global_state.get_global_attribute("uninitialized_variables", []) or []
        known = {id(v) for v in self._before}
        self.created = [v for v in pending if id(v) not in known]
        global_state.set_global_attribute("uninitialized_variables", self._before)


def initialize_variable(variable, value=None) -> None:
    """Give a deferred variable ``value`` (an array of its shape), or run its own initialiser."""
    if value is None:
        variable._deferred_initialize()
    else:
        variable._initialize(value)
        variable._initializer = None


def run_graph(model, inputs, call):
    """Run a functional (or Sequential) model eagerly, each operation through ``call(op, *args,
    **kwargs)``, in the order of its graph's nodes (``Functional.call`` does the same)."""
    functional = getattr(model, "_functional", None) or model
    if hasattr(functional, "_standardize_inputs"):
        inputs = functional._standardize_inputs(inputs)
    return functional._run_through_graph(inputs, call_fn=call)


def named_weights(layer, prefix: str = "") -> list[tuple[str, object]]:
    """``(path in layer, variable)`` for each of ``layer.weights``, in the same order and walked
    the same way (its own variables by name, then each sub-layer's under ``sublayer/``)."""
    found, seen = [], set()
    for variable in layer._trainable_variables + layer._non_trainable_variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            found.append((prefix + variable.name, variable))
    for inner in layer._layers:
        for path, variable in named_weights(inner, f"{prefix}{inner.name}/"):
            if id(variable) not in seen:
                seen.add(id(variable))
                found.append((path, variable))
    return found


def sublayers(layer) -> list:
    """The layers ``layer`` tracks directly (a MultiHeadAttention's query, key, value ...)."""
    return list(layer._flatten_layers(include_self=False, recursive=False))
