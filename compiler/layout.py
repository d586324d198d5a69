"""The one index type: which channel each position of a tensor's channel axis carries.

Every channel that a layer creates (a Dense unit, a Conv filter, a model input feature) gets a
global integer id. A tensor's ``Layout`` lists, position by position along its channel (last)
axis, the id it carries:

* a pass-through layer (BN, ReLU, pooling) outputs its input's layout unchanged;
* ``Concatenate`` concatenates layouts, so every offset behind an input shifts by itself;
* ``Flatten`` of ``(H, W, C)`` tiles the layout ``H*W`` times, because Keras' flat index is
  ``position * C + c`` (channels innermost);
* a depthwise multiplier ``m`` repeats each id ``m`` times (output ``c*m + k`` belongs to input ``c``).

Removing a set of ids then removes, from every tensor at once, exactly the positions that carry
them: ``layout.kept(removed)`` is the only place that turns ids into positions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Layout", "OUTPUTS"]

#: The unit a layer's output channels form. A layer may own other named blocks of channels (an
#: attention layer's ``heads``); a spec rule indexes ``outputs`` unless it says ``unit:``.
OUTPUTS = "outputs"


class Layout:
    """Immutable sequence of channel ids along a tensor's last axis."""

    __slots__ = ("_ids",)

    def __init__(self, ids) -> None:
        ids = np.array(ids, dtype=np.int64).reshape(-1)
        ids.setflags(write=False)
        self._ids = ids

    @classmethod
    def fresh(cls, start: int, size: int) -> "Layout":
        return cls(np.arange(start, start + size, dtype=np.int64))

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and np.array_equal(self._ids, other._ids)

    def __hash__(self) -> int:
        return hash(self._ids.tobytes())

    def __repr__(self) -> str:
        return f"Layout({self._ids.tolist() if len(self) <= 8 else f'{len(self)} channels'})"

    @staticmethod
    def concat(layouts: "list[Layout]") -> "Layout":
        return Layout(np.concatenate([layout.ids for layout in layouts]) if layouts else [])

    def tile(self, times: int) -> "Layout":
        """The layout of a flattened ``(positions..., C)`` tensor: ``index = position * C + c``."""
        return Layout(np.tile(self._ids, times))

    def repeat(self, times: int) -> "Layout":
        """Each channel ``c`` owns ``times`` consecutive outputs ``c*times ... c*times+times-1``."""
        return Layout(np.repeat(self._ids, times))

    def kept(self, removed: np.ndarray) -> np.ndarray:
        """Positions (sorted) whose channel survives; ``removed`` is a boolean mask over all ids."""
        return np.flatnonzero(~removed[self._ids])
