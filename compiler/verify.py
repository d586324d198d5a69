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
from .rules import rule_for, weight_paths

__all__ = ["verify", "zeroed_run", "run_by_call", "first_difference", "random_inputs", "relative_difference", "TOLERANCE"]

TOLERANCE = 1e-4


def random_inputs(model: keras.Model, batch: int = 2, seed: int = 0, spatial: int = 32):
    """Inputs for ``model`` in the structure it is called with (one array, a list, or a dict
    keyed by input name): normal floats; integer inputs are ids below the vocabulary size
    (``vocabulary_size``/``num_segments`` of a keras-hub backbone, else the smallest Embedding's
    ``input_dim``), and padding masks are ones. Unknown lengths are ``spatial``, capped by the
    model's ``max_sequence_length`` (position embeddings have a fixed length)."""
    rng = np.random.default_rng(seed)
    length = spatial
    limit = getattr(model, "max_sequence_length", None) or _smallest(model, "sequence_length")
    if isinstance(limit, int):
        length = min(spatial, limit)
    vocabulary = getattr(model, "vocabulary_size", None) or _smallest(model, "input_dim") or 2
    arrays = []
    for tensor in model.inputs:
        name = tensor.name or ""
        shape = [batch] + [length if d is None else int(d) for d in tensor.shape[1:]]
        dtype = str(tensor.dtype)
        if "mask" in name and ("int" in dtype or "bool" in dtype):
            arrays.append(np.ones(shape, dtype=dtype))
        elif "int" in dtype:
            bound = getattr(model, "num_segments", None) if "segment" in name else vocabulary
            arrays.append(rng.integers(0, bound or 2, size=shape).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype("float32"))
    structure = getattr(model, "input", None)
    if isinstance(structure, dict):     # keras.Model.inputs is the flattened structure
        return keras.tree.pack_sequence_as(structure, arrays)
    return arrays if len(arrays) > 1 else arrays[0]


def _smallest(model, attribute: str) -> int | None:
    """The smallest positive integer ``attribute`` of any layer of ``model`` (nested included)."""
    found = []
    stack = list(getattr(model, "layers", ()))
    while stack:
        layer = stack.pop()
        value = getattr(layer, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            found.append(value)
        stack.extend(getattr(layer, "layers", ()) if isinstance(layer, keras.Model) else ())
    return min(found) if found else None


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
    feed = random_inputs(original, seed=seed)
    if mode == "slice":
        expected = zeroed_run(original, plan, feed)
    else:
        expected = emit(original, plan, mode="slice")(feed, training=False)
    actual = rebuilt(feed, training=False)
    difference = relative_difference(expected, actual)
    if not np.isfinite(difference) or difference > tolerance:
        first = first_difference(original, rebuilt, plan, feed, tolerance) if mode == "slice" else None
        raise VerificationError(
            f"the rebuilt model differs from the original with removed channels zeroed "
            f"(relative max difference {difference:.3g} > {tolerance:g}"
            f"{f'; first at {first}' if first else ''}); nothing was written",
            hint="this is a prunec bug, or a register_rule declaration that does not match its "
                 "layer: please report it with the spec and model")
    return difference


def run_by_call(model: keras.Model, inputs, call):
    """Run ``model`` eagerly in inference mode, each call through ``call(op, key, args, kwargs)``,
    ``key`` being the graph's key for that call (``conv2``, ``shared@1``, ``backbone/conv1``)."""
    paths = layer_paths(model)
    counts: dict[int, int] = {}

    def each(op, *args, prefix: str = "", **kwargs):
        if isinstance(op, keras.Model):
            path = paths.get(id(op), op.name) + "/"
            return run_graph(op, args[0], lambda o, *a, **k: each(o, *a, prefix=path, **k))
        path = paths.get(id(op), prefix + op.name)
        index = counts.get(id(op), 0)
        counts[id(op)] = index + 1
        if isinstance(op, keras.layers.Layer) and "training" in _call_arguments(op):
            kwargs.setdefault("training", False)
        return call(op, path if index == 0 else f"{path}@{index}", args, kwargs)

    return run_graph(model, inputs, each)


def zeroed_run(model: keras.Model, plan: Plan, inputs, record: dict | None = None):
    """``model``'s outputs on ``inputs`` with the plan's removed channels read as zero; with
    ``record``, also each call's class and first output, by call key."""
    reads = dict(plan.reads)
    internal = {change.path: change for change in plan.layers if change.internal}
    copies: dict[int, object] = {}

    def call(op, key, args, kwargs):
        lost = reads.get(key)
        if lost:
            args, kwargs = _zero_inputs(args, kwargs, lost)
        path = key.split("@")[0]
        if path in internal:
            op = copies.get(id(op)) or copies.setdefault(
                id(op), _zeroed_copy(op, internal[path], args, kwargs))
        return _recorded(op, key, args, kwargs, record)

    return run_by_call(model, inputs, call)


def _recorded(op, key: str, args, kwargs, record: dict | None):
    out = op(*args, **kwargs)
    if record is not None:
        record[key] = (type(op).__name__, out[0] if isinstance(out, (list, tuple)) else out)
    return out


def first_difference(original: keras.Model, rebuilt: keras.Model, plan: Plan, inputs,
                     tolerance: float = TOLERANCE) -> str | None:
    """The first call, in graph order, whose kept outputs in ``rebuilt`` differ from the zeroed
    original's (``'conv2' (Conv2D), relative difference 0.3``), or None if none can be told."""
    reference: dict[str, tuple] = {}
    after: dict[str, tuple] = {}
    kept = dict(plan.writes)
    try:
        zeroed_run(original, plan, inputs, reference)
        run_by_call(rebuilt, inputs, lambda op, key, args, kwargs:
                    _recorded(op, key, args, kwargs, after))
    except Exception:       # a diagnosis only: the failure itself is already certain
        return None
    for key, (kind, expected) in reference.items():
        if key not in after:
            continue
        expected = keras.ops.convert_to_numpy(expected)
        actual = keras.ops.convert_to_numpy(after[key][1])
        if key in kept:
            expected = np.take(expected, kept[key], axis=-1)
        if expected.shape != actual.shape:
            continue
        difference = relative_difference(expected, actual)
        if not np.isfinite(difference) or difference > tolerance:
            return f"'{key}' ({kind}), relative difference {difference:.3g}"
    return None


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
    rule = rule_for(layer)
    copy = layer.__class__.from_config(rule.layer_config(layer) if rule else layer.get_config())
    copy(*args, **kwargs)                    # builds it
    before, after = weight_paths(layer), weight_paths(copy)
    for path, variable in before.items():
        value = keras.ops.convert_to_numpy(variable.value)
        after[path].assign(masked(value, change.slices.get(path, {})))
    return copy
