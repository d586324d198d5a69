"""The correctness law, checked at run time before anything is written.

The rebuilt model must compute what the original computes when every removed channel is read as
zero by every channel-mixing layer. The reference is the *original model itself*, run on random
inputs with each call's removed input channels multiplied by zero (``plan.reads``: which positions
of which input of which call); a layer that loses channels inside it (attention heads, recurrent
units) runs as a copy whose weight entries for them are zero. No second model is built, so
verification costs the memory of one batch of activations, not of a second set of weights. The
reference shares only the plan with ``emit``, not the code that applies it.

Zeroing a removed channel wherever it is read (not only at mixing layers) is the same law: a
removed channel's value matters only where a mixing layer reads it, and there it is zero either
way. (A mask-mode rebuild is checked against a slice-mode one instead.)
"""

from __future__ import annotations

import keras
import numpy as np

from .compat import run_graph
from .emit import emit, layer_paths, masked
from .errors import VerificationError
from .plan import Plan
from .rules import weight_paths

__all__ = ["verify", "zeroed_run", "random_inputs", "relative_difference", "TOLERANCE"]

TOLERANCE = 1e-4


def random_inputs(model: keras.Model, batch: int = 2, seed: int = 0, spatial: int = 32) -> list[np.ndarray]:
    """Normal float inputs (small integers for integer inputs) of the model's input shapes."""
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        shape = [batch] + [spatial if d is None else int(d) for d in tensor.shape[1:]]
        if "int" in str(tensor.dtype):
            arrays.append(rng.integers(0, 2, size=shape).astype(str(tensor.dtype)))
        else:
            arrays.append(rng.standard_normal(shape).astype("float32"))
    return arrays


def relative_difference(expected, actual) -> float:
    """``max |expected - actual| / max |expected|`` over every output; ``inf`` where one side is
    NaN or infinite and the other is not the same (``max(0.0, nan)`` would otherwise say 0)."""
    worst = 0.0
    for a, b in zip(_outputs(expected), _outputs(actual)):
        a, b = (np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float64) for t in (a, b))
        finite = np.isfinite(a) & np.isfinite(b)
        if not finite.all():
            if not np.array_equal(a[~finite], b[~finite], equal_nan=True):
                return float("inf")
            a, b = a[finite], b[finite]
        scale = max(float(np.max(np.abs(a))) if a.size else 0.0, 1e-6)
        worst = max(worst, float(np.max(np.abs(a - b))) / scale if a.size else 0.0)
    return worst


def _outputs(value) -> list:
    if isinstance(value, dict):
        return [value[k] for k in sorted(value)]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def verify(original: keras.Model, rebuilt: keras.Model, plan: Plan, mode: str = "slice",
           tolerance: float = TOLERANCE, seed: int = 0) -> float:
    """Raise VerificationError unless ``rebuilt`` obeys the law; return the relative difference."""
    inputs = random_inputs(original, seed=seed)
    feed = inputs if len(inputs) > 1 else inputs[0]
    if mode == "slice":
        expected = zeroed_run(original, plan, feed)
    else:
        expected = emit(original, plan, mode="slice")(feed, training=False)
    actual = rebuilt(feed, training=False)
    difference = relative_difference(expected, actual)
    if not np.isfinite(difference) or difference > tolerance:
        raise VerificationError(
            f"the rebuilt model differs from the original with removed channels zeroed "
            f"(relative max difference {difference:.3g} > {tolerance:g}); nothing was written",
            hint="this is a prunec bug, or a register_rule declaration that does not match its "
                 "layer: please report it with the spec and model")
    return difference


def zeroed_run(model: keras.Model, plan: Plan, inputs):
    """``model``'s outputs on ``inputs`` with the plan's removed channels read as zero."""
    reads = dict(plan.reads)
    internal = {change.path: change for change in plan.layers if change.internal}
    paths = layer_paths(model)
    calls: dict[int, int] = {}
    copies: dict[int, object] = {}

    def call(op, *args, prefix: str = "", **kwargs):
        if isinstance(op, keras.Model):
            path = paths.get(id(op), op.name) + "/"
            return run_graph(op, args[0], lambda o, *a, **k: call(o, *a, prefix=path, **k))
        path = paths.get(id(op), prefix + op.name)
        index = calls.get(id(op), 0)
        calls[id(op)] = index + 1
        lost = reads.get(path if index == 0 else f"{path}@{index}")
        if lost:
            args, kwargs = _zero_inputs(args, kwargs, lost)
        if path in internal:
            op = copies.get(id(op)) or copies.setdefault(
                id(op), _zeroed_copy(op, internal[path], args, kwargs))
        if isinstance(op, keras.layers.Layer) and "training" in _call_arguments(op):
            kwargs.setdefault("training", False)
        return op(*args, **kwargs)

    return run_graph(model, inputs, call)


def _call_arguments(layer) -> tuple[str, ...]:
    import inspect
    try:
        return tuple(inspect.signature(layer.call).parameters)
    except (TypeError, ValueError):
        return ()


def _zero_inputs(args, kwargs, lost):
    """``(args, kwargs)`` with the lost positions of the listed input tensors multiplied by 0."""
    flat = keras.tree.flatten((tuple(args), dict(kwargs)))
    tensors = [i for i, value in enumerate(flat) if _is_tensor(value)]
    for index, kept, width in lost:
        position = tensors[index]
        keep = np.zeros(width, dtype="float32")
        keep[list(kept)] = 1
        value = flat[position]
        flat[position] = value * keras.ops.cast(keep, value.dtype)
    args, kwargs = keras.tree.pack_sequence_as((tuple(args), dict(kwargs)), flat)
    return args, kwargs


def _is_tensor(value) -> bool:
    return keras.ops.is_tensor(value) or isinstance(value, np.ndarray)


def _zeroed_copy(layer, change, args, kwargs):
    """A copy of ``layer`` whose weight entries for removed channels are zero (mask mode)."""
    copy = layer.__class__.from_config(layer.get_config())
    copy(*args, **kwargs)                    # builds it
    before, after = weight_paths(layer), weight_paths(copy)
    for path, variable in before.items():
        value = keras.ops.convert_to_numpy(variable.value)
        after[path].assign(masked(value, change.slices.get(path, {})))
    return copy
