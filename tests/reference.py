"""Independent reference ("oracle") for the pruning correctness law.

The law: a pruned model must compute exactly what the original computes when
every removed channel is replaced by zero wherever a channel-mixing layer
(Dense, Conv*, ...) *reads* it.  This module builds that "zeroed reads" model
directly from the original Keras model, without using any compiler code, so
tests can compare the compiler's output against it.

Public API
----------
- ``zeroed_reads_model(model, zero)``: copy of ``model`` whose layers listed in
  ``zero`` see some input channels (last axis) multiplied by 0, at every call.
- ``hand_sliced_dense_pair(model, first, second, remove)``: the weights a
  correctly pruned pair of consecutive Dense layers must have.
- ``assert_outputs_close(a, b, x, rtol)``: compare two models on ``x``;
  ``relative_difference(a, b, x)``: how far apart they are.
- ``random_inputs(model, batch, seed)``: float32 normal inputs for ``model``.
- ``get_layer_by_path(model, "backbone/conv2")``: layer lookup inside nested
  models.

Layer paths are layer names joined by "/" through nested models, e.g.
``"fc2"`` or ``"backbone/conv2"`` (``backbone`` being a nested model).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence

import keras
import numpy as np

__all__ = [
    "zeroed_reads_model",
    "hand_sliced_dense_pair",
    "assert_outputs_close",
    "random_inputs",
    "get_layer_by_path",
    "layer_paths",
    "zeroed_weights_model",
    "zero_weights",
]


# --------------------------------------------------------------------------
# Layer paths
# --------------------------------------------------------------------------


def _is_model(layer) -> bool:
    return isinstance(layer, keras.Sequential) or _is_functional(layer)


def _is_functional(layer) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(layer, Functional)


def _sublayers(model) -> list:
    """Non-input layers of a Sequential/Functional model, in model order."""
    return [
        l for l in model.layers if not isinstance(l, keras.layers.InputLayer)
    ]


def get_layer_by_path(model, path: str):
    """Return the layer at ``path`` ("a/b/c": layer c inside nested model b
    inside nested model a of ``model``)."""
    layer = model
    for part in path.split("/"):
        if not _is_model(layer):
            raise KeyError(
                f"layer path {path!r}: {layer.name!r} is not a nested model"
            )
        try:
            layer = layer.get_layer(part)
        except ValueError as e:
            raise KeyError(f"layer path {path!r}: no layer {part!r}") from e
    return layer


def layer_paths(model, prefix: str = "") -> dict[str, object]:
    """All layer paths of ``model`` (recursing into nested models), mapped to
    their layer.  Nested models appear themselves and with their content."""
    out: dict[str, object] = {}
    for layer in _sublayers(model):
        path = prefix + layer.name
        out[path] = layer
        if _is_model(layer):
            out.update(layer_paths(layer, path + "/"))
    return out


# --------------------------------------------------------------------------
# Zeroed-reads model
# --------------------------------------------------------------------------


def _clone_layer(layer):
    """Fresh, unbuilt copy of a (non-model) layer with the same config/name.

    ``Lambda`` layers holding a Python lambda cannot go through
    ``from_config`` in safe mode, so they are rebuilt around the same function
    object instead.
    """
    if isinstance(layer, keras.layers.Lambda):
        return keras.layers.Lambda(
            layer.function,
            output_shape=layer._output_shape,
            mask=layer.mask,
            arguments=dict(layer.arguments),
            name=layer.name,
            dtype=layer.dtype_policy,
        )
    return layer.__class__.from_config(layer.get_config())


def _indices(spec):
    """Sorted unique channel indices, or ``{argument: indices}`` of them."""
    if isinstance(spec, Mapping):
        return {name: sorted(set(int(i) for i in v)) for name, v in spec.items()}
    return sorted(set(int(i) for i in spec))


def _zeroed(x, idx, where: str):
    """``x`` with channels ``idx`` of its last axis multiplied by 0."""
    if isinstance(x, (list, tuple, dict)):
        raise ValueError(f"{where}: zeroing the input of a multi-input layer is not supported")
    channels = x.shape[-1]
    if channels is None or any(i < 0 or i >= channels for i in idx):
        raise IndexError(
            f"{where}: channel indices {idx} out of range for input "
            f"with {channels} channels (shape {x.shape})"
        )
    mask = np.ones((channels,), dtype=x.dtype)
    mask[list(idx)] = 0
    return keras.ops.multiply(x, mask)


class _Rebuilder:
    """Rebuilds a model graph with fresh layers and masked layer inputs.

    Functional (sub)models go through ``keras.models.clone_model`` with a
    ``clone_function`` and a ``call_function``.  ``recursive=True`` is NOT used:
    Keras then clones nested models itself but (a) never propagates
    ``call_function`` into nested *Sequential* models and (b) does not tell the
    ``call_function`` in which nested model a layer lives, so "backbone/conv2"
    could not be told apart from a top-level "conv2".  Instead our
    ``clone_function`` recurses into nested models itself, carrying the path
    prefix.

    Sequential (sub)models are converted to an equivalent Functional model
    (Input -> layers in order -> output) built from *fresh* layer clones, so
    that the same ``call_function`` applies (``clone_model`` rejects
    ``call_function`` for Sequential models).  The original layers are never
    called, so the original model's graph (inbound nodes) is left untouched.
    """

    def __init__(self, zero: Mapping[str, Sequence[int]]):
        self.zero = {k: _indices(v) for k, v in zero.items()}
        self.path_of: dict[int, str] = {}  # id(clone) -> path
        self.clone_of: dict[int, object] = {}  # id(original) -> clone
        self.applied: set[str] = set()

    # -- cloning --------------------------------------------------------
    def clone(self, layer, prefix: str):
        if id(layer) in self.clone_of:  # layer shared between call sites
            return self.clone_of[id(layer)]
        if not isinstance(layer, keras.layers.Layer):
            # Raw keras.ops operation (e.g. `x * 2.0`): stateless, reuse it.
            return layer
        path = prefix + layer.name
        if _is_model(layer):
            new = self.rebuild(layer, path + "/")
        else:
            new = _clone_layer(layer)
        self.clone_of[id(layer)] = new
        self.path_of[id(new)] = path
        return new

    # -- calling --------------------------------------------------------
    def call(self, layer, *args, **kwargs):
        path = self.path_of.get(id(layer))
        if path is not None and path in self.zero:
            spec = self.zero[path]
            if isinstance(spec, Mapping):
                args, kwargs = self._zero_arguments(layer, path, spec, args, kwargs)
            else:
                if not args:
                    raise ValueError(f"{path}: layer called without positional input")
                args = (_zeroed(args[0], spec, path),) + tuple(args[1:])
            self.applied.add(path)
        return layer(*args, **kwargs)

    @staticmethod
    def _zero_arguments(layer, path, spec, args, kwargs):
        """Zero the named arguments of the call (``{"value": [1]}``: the tensor passed as
        ``value``, by position or keyword, as ``layer.call``'s signature binds it)."""
        bound = inspect.signature(layer.call).bind(*args, **kwargs)
        for name, idx in spec.items():
            if bound.arguments.get(name) is None:
                raise ValueError(f"{path}: the call has no argument {name!r} to zero")
            bound.arguments[name] = _zeroed(bound.arguments[name], idx, f"{path} ({name})")
        return bound.args, bound.kwargs

    # -- models ---------------------------------------------------------
    def rebuild(self, model, prefix: str = ""):
        if isinstance(model, keras.Sequential):
            return self._rebuild_sequential(model, prefix)
        if _is_functional(model):
            return keras.models.clone_model(
                model,
                clone_function=lambda l: self.clone(l, prefix),
                call_function=self.call,
            )
        raise TypeError(
            f"zeroed_reads_model supports Sequential and Functional models, "
            f"got {type(model).__name__} ({model.name!r})"
        )

    def _rebuild_sequential(self, model, prefix: str):
        if not model.built or not model.inputs:
            raise ValueError(
                f"Sequential model {model.name!r} must be built with a known "
                "input shape"
            )
        (ref,) = model.inputs
        first = model._layers[0] if model._layers else None
        name = first.name if isinstance(first, keras.layers.InputLayer) else None
        inp = keras.Input(batch_shape=ref.shape, dtype=ref.dtype, name=name)
        x = inp
        for layer in _sublayers(model):
            x = self.call(self.clone(layer, prefix), x)
        return keras.Model(inp, x, name=model.name)


def _relative_key(variable, layer) -> str:
    """Key of ``variable`` relative to the layer owning it: the part of
    ``variable.path`` after the layer's name ("backbone/conv1/kernel" ->
    "kernel", "block/dense/kernel" for layer "block" -> "dense/kernel")."""
    parts = variable.path.split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == layer.name:
            return "/".join(parts[i + 1 :])
    return variable.name


def _auto_named_alike(src, dst) -> bool:
    """Same number of variables, and wherever the names differ both are
    Keras' automatic ``variable``/``variable_N``."""
    if len(src.weights) != len(dst.weights):
        return False
    auto = re.compile(r"variable(_\d+)?\Z")
    return all(
        a.name == b.name or (auto.match(a.name) and auto.match(b.name))
        for a, b in zip(src.weights, dst.weights)
    )


def _copy_layer_weights(src, dst, path: str) -> None:
    src_vars = {_relative_key(v, src): v for v in src.weights}
    dst_vars = {_relative_key(v, dst): v for v in dst.weights}
    if len(src_vars) != len(src.weights) or len(dst_vars) != len(dst.weights):
        raise ValueError(f"{path}: ambiguous variable paths")
    if set(src_vars) != set(dst_vars) and _auto_named_alike(src, dst):
        # Variables created without a name get a process-unique "variable_N"
        # (ConvNeXt's LayerScale): pair them in creation order.
        src_vars = {str(i): v for i, v in enumerate(src.weights)}
        dst_vars = {str(i): v for i, v in enumerate(dst.weights)}
    if set(src_vars) != set(dst_vars):
        # Fall back to plain variable names if they are unique.
        src_vars = {v.name: v for v in src.weights}
        dst_vars = {v.name: v for v in dst.weights}
        if (
            len(src_vars) != len(src.weights)
            or len(dst_vars) != len(dst.weights)
            or set(src_vars) != set(dst_vars)
        ):
            raise ValueError(
                f"{path}: cannot match variables "
                f"{sorted(v.path for v in src.weights)} to "
                f"{sorted(v.path for v in dst.weights)}"
            )
    for key, sv in src_vars.items():
        dv = dst_vars[key]
        if tuple(sv.shape) != tuple(dv.shape):
            raise ValueError(
                f"{path}/{key}: shape {tuple(sv.shape)} != {tuple(dv.shape)}"
            )
        dv.assign(keras.ops.convert_to_numpy(sv.value))
    if hasattr(dst, "finalize_state"):
        # layers that derive state from their variables (an adapted Normalization's broadcast
        # mean) recompute it, as Keras does after loading variables
        dst.finalize_state()


def _copy_weights(src_model, dst_model, prefix: str = "") -> None:
    """Copy weights layer by layer, matching layers by name (recursively) and
    variables by their path relative to the layer."""
    dst_layers = {l.name: l for l in _sublayers(dst_model)}
    for src in _sublayers(src_model):
        path = prefix + src.name
        dst = dst_layers.get(src.name)
        if dst is None:
            if src.weights:
                raise ValueError(f"{path}: missing in the copy")
            continue
        if _is_model(src):
            _copy_weights(src, dst, path + "/")
        else:
            _copy_layer_weights(src, dst, path)


def zeroed_reads_model(
    model: keras.Model, zero: Mapping[str, Sequence[int]]
) -> keras.Model:
    """Copy of ``model`` in which selected input channels of layers read 0.

    For each ``path -> indices`` in ``zero`` (path like ``"fc2"`` or
    ``"backbone/conv2"``), the input of that layer is multiplied by a constant
    0/1 mask over its last axis (0 at ``indices``) before the layer is called,
    at *every* call of the layer (shared layers included).  Giving a nested
    model's path masks the input of the nested model.  For a layer reading
    several tensors, ``indices`` may instead map argument names of its
    ``call`` to indices: ``{"mha": {"query": [0], "value": [2, 3]}}`` zeroes
    channel 0 of the tensor passed as ``query`` and 2, 3 of ``value`` (by
    position or keyword, as the call's signature binds them).

    The copy has fresh layers with identical config and names, and identical
    weights (copied by layer name and variable path, never by position).
    The returned model is always Functional: Sequential models (top-level or
    nested) are converted to the equivalent Functional graph
    (Input -> layers -> output), since ``clone_model`` only supports
    ``call_function`` for Functional models.  The original model is not
    modified (its layers are never called on new tensors).

    Raises ``KeyError`` if a path does not name a layer of the model,
    ``IndexError`` for out-of-range channels, ``ValueError`` for multi-input
    layers.
    """
    paths = layer_paths(model)
    for key in zero:
        if key not in paths:
            raise KeyError(
                f"zeroed_reads_model: no layer at path {key!r}; known paths: "
                f"{sorted(paths)}"
            )
    rb = _Rebuilder(zero)
    new = rb.rebuild(model)
    missing = set(rb.zero) - rb.applied
    if missing:
        raise KeyError(
            f"zeroed_reads_model: layers {sorted(missing)} were never called"
        )
    _copy_weights(model, new)
    return new


# --------------------------------------------------------------------------
# Hand-sliced seed case
# --------------------------------------------------------------------------


def hand_sliced_dense_pair(
    model, first: str, second: str, remove: Sequence[int]
) -> dict[str, list[np.ndarray]]:
    """Weights of a correctly pruned pair of consecutive Dense layers.

    Removing units ``remove`` of Dense ``first`` (feeding Dense ``second``):
    ``first`` keeps ``kernel[:, keep]`` and ``bias[keep]``; ``second`` keeps
    ``kernel[keep, :]`` and its full bias.  Returned in Keras ``set_weights``
    order ([kernel, bias], or [kernel] without bias).
    """
    a = get_layer_by_path(model, first)
    b = get_layer_by_path(model, second)
    for layer, name in ((a, first), (b, second)):
        if not isinstance(layer, keras.layers.Dense):
            raise TypeError(f"{name} is {type(layer).__name__}, not Dense")
    units = a.units
    remove = sorted(set(int(i) for i in remove))
    if any(i < 0 or i >= units for i in remove):
        raise IndexError(f"{first}: units to remove {remove} not in [0, {units})")
    keep = np.array([i for i in range(units) if i not in set(remove)], dtype=int)
    if keep.size == 0:
        raise ValueError(f"{first}: cannot remove all {units} units")

    def arr(v):
        return np.asarray(keras.ops.convert_to_numpy(v))

    wa = [arr(a.kernel)[:, keep]]
    if a.use_bias:
        wa.append(arr(a.bias)[keep])
    wb = [arr(b.kernel)[keep, :]]
    if b.use_bias:
        wb.append(arr(b.bias))
    return {first: wa, second: wb}


# --------------------------------------------------------------------------
# Running and comparing
# --------------------------------------------------------------------------


def random_inputs(model, batch: int = 4, seed: int = 0):
    """float32 standard-normal inputs matching ``model.inputs`` (unknown
    non-batch dims -> 8).  A single array for single-input models, else a
    list in ``model.inputs`` order."""
    rng = np.random.default_rng(seed)
    xs = []
    for t in model.inputs:
        shape = (batch,) + tuple(8 if d is None else int(d) for d in t.shape[1:])
        xs.append(rng.standard_normal(shape).astype(np.float32))
    return xs[0] if len(xs) == 1 else xs


def _run(model, x) -> list[np.ndarray]:
    out = model(x, training=False)
    return [
        np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(out)
    ]


def assert_outputs_close(a, b, x, rtol: float = 1e-4) -> None:
    """Run models ``a`` and ``b`` on ``x`` and assert each output pair has
    ``max|a - b| <= rtol * (max|a| + 1e-6)``."""
    oa, ob = _run(a, x), _run(b, x)
    if len(oa) != len(ob):
        raise AssertionError(
            f"{a.name} has {len(oa)} outputs, {b.name} has {len(ob)}"
        )
    problems = []
    for i, (ya, yb) in enumerate(zip(oa, ob)):
        if ya.shape != yb.shape:
            problems.append(f"output {i}: shape {ya.shape} != {yb.shape}")
            continue
        if not (np.all(np.isfinite(ya)) and np.all(np.isfinite(yb))):
            problems.append(f"output {i}: non-finite values")
            continue
        scale = float(np.max(np.abs(ya))) if ya.size else 0.0
        diff = np.abs(ya.astype(np.float64) - yb.astype(np.float64))
        worst = float(diff.max()) if diff.size else 0.0
        rel = worst / (scale + 1e-6)
        if rel > rtol:
            where = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), diff.shape))
            problems.append(
                f"output {i} (shape {ya.shape}): relative max diff {rel:.3g} > "
                f"rtol {rtol:g} (max abs diff {worst:.3g} at {where}: "
                f"{ya[where]:.6g} vs {yb[where]:.6g}; max|a| = {scale:.3g}; "
                f"{int((diff > rtol * (scale + 1e-6)).sum())}/{diff.size} "
                "entries off)"
            )
    if problems:
        raise AssertionError(
            f"outputs of {a.name!r} and {b.name!r} differ:\n  "
            + "\n  ".join(problems)
        )


def relative_difference(a, b, x) -> float:
    """Run models ``a`` and ``b`` on ``x``: the largest ``max|a - b| / (max|a| + 1e-6)`` over
    their outputs (to show two models differ, e.g. an original and its reference)."""
    worst = 0.0
    for ya, yb in zip(_run(a, x), _run(b, x)):
        diff = np.abs(ya.astype(np.float64) - yb.astype(np.float64))
        worst = max(worst, float(diff.max()) / (float(np.max(np.abs(ya))) + 1e-6))
    return worst


# --------------------------------------------------------------------------
# Zeroed weights (producers, heads)
# --------------------------------------------------------------------------


def _weights_by_path(layer) -> dict:
    """``path in the layer -> variable``. A clone's wrapped cells (``Bidirectional(RNN(cell))``)
    are built outside their parents' name scope (both directions' kernels are ``cell/kernel``),
    so their paths are spelled by the sub-layer names leading to them instead."""
    prefix = layer.path + "/"
    if all(v.path.startswith(prefix) for v in layer.weights):
        return {v.path[len(prefix):]: v for v in layer.weights}
    found = {}

    def walk(owner, path):
        nested = set()
        for sub in owner._flatten_layers(include_self=False, recursive=False):
            walk(sub, f"{path}{sub.name}/")
            nested.update(id(v) for v in sub.weights)
        for v in owner.weights:
            if id(v) not in nested:
                found.setdefault(path + v.name, v)

    walk(layer, "")
    return found


def zeroed_weights_model(
    model: keras.Model, zero: Mapping[str, Mapping[str, tuple[int, Sequence[int]]]]
) -> keras.Model:
    """Copy of ``model`` whose listed weight entries are 0.

    ``zero`` maps a layer path to ``{weight: (axis, indices)}``, the weight named by its Keras
    variable path less the layer's (``"kernel"``, ``"value/kernel"``): zeroing a producer's
    output column, or an attention head's value projection, silences that channel or head.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return zero_weights(copy, zero)


def zero_weights(model: keras.Model, zero: Mapping[str, Mapping[str, tuple[int, Sequence[int]]]]
                 ) -> keras.Model:
    """Set ``zero``'s entries of ``model`` (a copy the caller made) to 0, in place; returns it.
    For models ``clone_model`` cannot copy (some keras-hub backbones): copy them from config."""
    for path, weights in zero.items():
        layer = get_layer_by_path(model, path)
        by_path = _weights_by_path(layer)
        for weight, (axis, indices) in weights.items():
            if weight not in by_path:
                raise KeyError(f"{path} has no weight {weight!r}; it has {sorted(by_path)}")
            value = np.array(by_path[weight].numpy())
            index = [slice(None)] * value.ndim
            index[axis] = list(indices)
            value[tuple(index)] = 0
            by_path[weight].assign(value)
    return model
