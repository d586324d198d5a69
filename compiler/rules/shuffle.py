"""Channel shuffle: ``Reshape (..., C) -> (..., g, C/g)``, swap the last two axes, ``Reshape`` back.

ShuffleNet's shuffle is a permutation of channels: position ``i*n + j`` (group ``i`` of ``g``, index
``j`` of ``n = C/g``) moves to ``j*g + i``. While the channels are spread over the last *two* axes,
their ids are a ``Grid``: a ``(rows, cols)`` matrix of ids laid out as the tensor's last two axes.

* The first Reshape turns the layout into a Grid whose rows are the groups.
* ``Permute``/swapping the last two axes transposes it (the groups are then its columns).
* The Reshape back flattens it row by row: the shuffled layout.

Every group must lose as many channels (a Reshape cannot make groups of different sizes), and
that is not enough: if group 0 lost index 1 and group 1 index 2, the rebuilt shuffle ``(..., g, k)
-> (..., k, g) -> (..., g*k)`` would pair group 0's index 2 with group 1's index 1 -- a different
order than the original's kept channels, silently wrong for every layer after it. So the first
Reshape *couples* index ``j`` of every group: a removal takes the same index from each group, the
rebuilt shuffle is the original permutation restricted to the kept channels, and a removal that
cannot take a whole column (a group fed by a model input) is refused in one line naming the
shuffle (``coupled by '<its first Reshape>'``). ``Grid.kept`` still checks the counts, as a guard.
Any other layer reading a Grid stops there (``graph.py``).
"""

from __future__ import annotations

import numpy as np

from ..layout import Layout
from .base import Unsatisfiable

__all__ = ["Grid"]


class Grid(Layout):
    """Channel ids over a tensor's last two axes; ``ids`` lists them all (row by row)."""

    __slots__ = ("matrix", "groups_axis", "origin")
    spans_axes = True     # graph.py: only rules that declare ``accepts_grids`` may read one

    def __init__(self, matrix: np.ndarray, groups_axis: int, origin: str) -> None:
        super().__init__(np.asarray(matrix).ravel())
        self.matrix = np.asarray(matrix, dtype=np.int64)
        self.groups_axis = groups_axis        # 0: the rows are the groups; 1: the columns are
        self.origin = origin                  # the call that split the channel axis

    def __len__(self) -> int:
        return int(self.matrix.shape[1])      # the size of the tensor's last axis

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grid) and np.array_equal(self.matrix, other.matrix) and \
            self.groups_axis == other.groups_axis

    def __hash__(self) -> int:
        return hash((self.matrix.tobytes(), self.groups_axis))

    def __repr__(self) -> str:
        return f"Grid({self.matrix.shape[0]}x{self.matrix.shape[1]})"

    def transposed(self) -> "Grid":
        return Grid(self.matrix.T, 1 - self.groups_axis, self.origin)

    def merged(self) -> Layout:
        """The layout of the tensor once its last two axes are one (row-major)."""
        return Layout(self.matrix.ravel())

    def kept(self, removed: np.ndarray) -> np.ndarray:
        """Kept positions along the last axis; every group must keep as many channels."""
        groups = self.matrix if self.groups_axis == 0 else self.matrix.T
        counts = [int((~removed[group]).sum()) for group in groups]
        if len(set(counts)) > 1 or counts[0] == 0:
            other = next((i for i, n in enumerate(counts) if n != counts[0]), 0)
            detail = (f"group 0 keeps {counts[0]} channels, group {other} keeps {counts[other]}"
                      if other else "every group would keep no channel")
            raise Unsatisfiable(
                f"the channel shuffle that starts at '{self.origin}' needs every one of its "
                f"{len(counts)} groups to keep as many channels ({detail})",
                "remove the same number of channels from every group of the shuffle")
        if self.groups_axis == 0:
            return np.arange(counts[0])
        return np.arange(self.matrix.shape[1])
