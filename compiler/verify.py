"""The correctness law, checked at run time before anything is written.

The rebuilt model must compute what the original computes when every removed channel is read as
zero by every channel-mixing layer. The mask-mode model is exactly that: the original's shapes,
with every weight entry that reads (or writes) a removed channel set to zero. So a slice-mode
rebuild is compared with the mask-mode rebuild (and a mask-mode rebuild with the slice-mode one)
on random inputs; the two share only the plan, not the code that applies it.
"""

from __future__ import annotations

import keras
import numpy as np

from .emit import emit
from .errors import VerificationError
from .plan import Plan

__all__ = ["verify", "random_inputs", "relative_difference", "TOLERANCE"]

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
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
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
    reference = emit(original, plan, mode="mask" if mode == "slice" else "slice")
    feed = random_inputs(original, seed=seed)
    expected = reference(feed, training=False)
    actual = rebuilt(feed, training=False)
    difference = relative_difference(expected, actual)
    if not np.isfinite(difference) or difference > tolerance:
        raise VerificationError(
            f"the rebuilt model differs from the original with removed channels zeroed "
            f"(relative max difference {difference:.3g} > {tolerance:g}); nothing was written",
            hint="this is a prunec bug, or a register_rule declaration that does not match its "
                 "layer: please report it with the spec and model")
    return difference
