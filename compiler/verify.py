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
    inputs = random_inputs(original, seed=seed)
    feed = inputs if len(inputs) > 1 else inputs[0]
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
