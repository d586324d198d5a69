"""Importance criteria that look at data (and ``bn_scale``, which looks at BatchNormalization).

Where a channel is measured: at the end of its *chain*, the tensors its producer's output flows
through unchanged (one consumer at a time, the same layout in and out: BatchNormalization,
activations, dropout, pooling). For ``conv -> BN -> ReLU -> MaxPool`` that is the pooled, activated
output, where a "dead" channel is visibly zero; a chain stops at a merge, a branch, a Flatten or
a layer that mixes channels. For a tensor ``a`` of shape ``(N, ..., C)`` carrying channel ``c`` at
position ``c`` of its last axis, over every sample ``n`` and spatial position ``s``::

    activation[c] = mean_{n,s} |a[n,s,c]|
    apoz[c]       = 1 - mean_{n,s} [a[n,s,c] == 0]        (the share of *non-zero* outputs:
                                                           an almost never active channel is low)
    taylor[c]     = mean_n |sum_s a[n,s,c] * dL_n/da[n,s,c]|  (first-order change of the loss
                                                           when channel c is zeroed, Molchanov 2017)
    bn_scale[c]   = |gamma[c]| of the BatchNormalization on the chain

A group's score is the sum over its member channels, as for the magnitude criteria
(``scores.py``), so every criterion yields the same root-indexed array and ranks the same way:
lowest first. ``bn_scale`` leaves groups with no BatchNormalization as NaN (the planner refuses
them). The model runs eagerly in inference mode (``verify.run_by_call``), one batch at a time;
``taylor`` takes the gradient of the summed per-sample loss, which (in inference mode, where
samples are independent) gives every sample's own gradient.
"""

from __future__ import annotations

import keras
import numpy as np

from .data import DATA_CRITERIA, DATA_HINT, Data, DataError
from .errors import SpecError
from .graph import ModelGraph
from .layout import OUTPUTS, Layout
from .scores import group_scores
from .verify import run_by_call

__all__ = ["Scorer", "DATA_CRITERIA", "CRITERIA", "measure_points", "channel_statistics",
           "resolve_loss"]

CRITERIA = ("l1", "l2", "bn_scale") + DATA_CRITERIA


class Scorer:
    """``scorer(graph, criterion)`` -> root-indexed scores; remembers which criteria it served.

    ``data`` (a ``Data``) is read only by data criteria; ``loss`` (a Keras loss identifier) only
    by ``taylor``.
    """

    def __init__(self, data: Data | None = None, loss: str | None = None,
                 loss_where: str | None = None):
        self.data, self.loss, self.loss_where = data, loss, loss_where
        self.used: list[str] = []
        self._stats: dict[tuple[int, bool], dict[str, np.ndarray]] = {}

    @property
    def data_fingerprint(self) -> str | None:
        """The data's SHA-256, if a data criterion read it."""
        if self.data is None or not any(c in DATA_CRITERIA for c in self.used):
            return None
        return self.data.fingerprint()

    def __call__(self, graph: ModelGraph, criterion: str) -> np.ndarray:
        if criterion not in self.used:
            self.used.append(criterion)
        if criterion in ("l1", "l2"):
            return group_scores(graph, criterion)
        if criterion == "bn_scale":
            return _grouped(graph, bn_scales(graph))
        if self.data is None:
            raise DataError(f"criterion '{criterion}' needs data", hint=DATA_HINT)
        taylor = criterion == "taylor"
        if taylor and self.loss is None:
            raise SpecError("criterion 'taylor' needs a loss", self.loss_where,
                            "add e.g. 'loss: sparse_categorical_crossentropy' at the top of the spec")
        key = (id(graph), taylor)
        if key not in self._stats:
            loss = resolve_loss(self.loss, self.loss_where) if taylor else None
            self._stats[key] = channel_statistics(graph, self.data, loss)
        return _grouped(graph, self._stats[key][criterion])


def resolve_loss(identifier, where: str | None = None):
    """A Keras loss function (per-sample) from an identifier such as ``mse``."""
    try:
        loss = keras.losses.get(identifier)
    except (ValueError, TypeError):
        loss = None
    if loss is None:
        raise SpecError(f"unknown loss {identifier!r}", where,
                        "use a Keras loss identifier, e.g. sparse_categorical_crossentropy, "
                        "categorical_crossentropy, binary_crossentropy, mse")
    return loss


def _grouped(graph: ModelGraph, per_id: np.ndarray) -> np.ndarray:
    nan = np.isnan(per_id)
    grouped = np.bincount(graph.root, weights=np.where(nan, 0.0, per_id), minlength=graph.num_ids)
    covered = np.bincount(graph.root, weights=(~nan).astype(float), minlength=graph.num_ids)
    grouped[covered == 0] = np.nan
    return grouped


def measure_points(graph: ModelGraph) -> dict[str, list[tuple[str, int, Layout]]]:
    """``producer call key -> [(call key, output index, layout)]``: the chain of tensors that carry
    the producer's fresh output channels unchanged, the producer's own output first."""
    chains = {}
    for space in graph.spaces:
        if space.unit != OUTPUTS or space.owner not in graph.graph:
            continue
        call = graph.graph.nodes[space.owner].get("call")
        if call is None:
            continue
        index = next((i for i, layout in enumerate(call.outputs) if layout is not None and len(layout)
                      and layout.ids[0] == space.start and len(layout) == space.size), None)
        if index is None:
            continue
        layout = call.outputs[index]
        chain, key = [(call.key, index, layout)], call.key
        while len(graph.graph.nodes[key]["call"].outputs) == 1:
            following = list(graph.graph.successors(key))
            if len(following) != 1 or graph.graph.nodes[key].get("output"):
                break
            nxt = graph.graph.nodes[following[0]].get("call")
            if nxt is None or len(nxt.inputs) != 1 or nxt.inputs[0] != layout or \
                    len(nxt.outputs) != 1 or nxt.outputs[0] != layout:
                break
            chain.append((nxt.key, 0, layout))
            key = nxt.key
        chains[call.key] = chain
    return chains


def bn_scales(graph: ModelGraph) -> np.ndarray:
    """Per channel id: |gamma| of the first BatchNormalization on its chain, else NaN."""
    per_id = np.full(graph.num_ids, np.nan)
    for chain in measure_points(graph).values():
        for key, _, layout in chain:
            op = graph.graph.nodes[key]["call"].op
            if isinstance(op, keras.layers.BatchNormalization) and op.scale:
                gamma = np.abs(keras.ops.convert_to_numpy(op.gamma)).astype(np.float64)
                per_id[layout.ids] = gamma
                break
    return per_id


def channel_statistics(graph: ModelGraph, data: Data, loss=None) -> dict[str, np.ndarray]:
    """Per channel id: ``activation``, ``apoz`` (share of non-zeros) and, with ``loss``,
    ``taylor``, measured at the end of each chain over every batch of ``data``."""
    import tensorflow as tf

    model = graph.model
    points = {chain[-1][0]: chain[-1] for chain in measure_points(graph).values()}
    data.check(model, need_y=loss is not None, why=" (criterion 'taylor' needs labels)")
    sums = {key: np.zeros(len(layout)) for key, (_, _, layout) in points.items()}
    zeros = {key: np.zeros(len(layout)) for key in points for layout in [points[key][2]]}
    taylor = {key: np.zeros(len(layout)) for key, (_, _, layout) in points.items()}
    count = {key: 0 for key in points}
    samples = 0
    for inputs, y in data.progress(data.batches(model, need_y=loss is not None), "measuring"):
        feed = inputs if len(inputs) > 1 else inputs[0]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            outputs, captured = _capture(model, feed, set(points), tape if loss else None)
            if loss is not None:
                total = _loss(loss, y, outputs, data.where)
        grads = tape.gradient(total, [captured[k] for k in points]) if loss is not None else None
        for i, key in enumerate(points):
            index = points[key][1]
            value = keras.ops.convert_to_numpy(captured[key]).astype(np.float64)
            flat = value.reshape(-1, value.shape[-1])
            sums[key] += np.abs(flat).sum(axis=0)
            zeros[key] += (flat == 0).sum(axis=0)
            count[key] += flat.shape[0]
            if grads is not None and grads[i] is not None:
                product = value * keras.ops.convert_to_numpy(grads[i]).astype(np.float64)
                per_sample = product.reshape(product.shape[0], -1, product.shape[-1]).sum(axis=1)
                taylor[key] += np.abs(per_sample).sum(axis=0)
            del index
        samples += len(inputs[0])
    stats = {name: np.zeros(graph.num_ids) for name in ("activation", "apoz", "taylor")}
    hits = np.zeros(graph.num_ids)
    for key, (_, _, layout) in points.items():
        n = max(count[key], 1)
        np.add.at(stats["activation"], layout.ids, sums[key] / n)
        np.add.at(stats["apoz"], layout.ids, 1.0 - zeros[key] / n)
        np.add.at(stats["taylor"], layout.ids, taylor[key] / max(samples, 1))
        np.add.at(hits, layout.ids, 1.0)
    for name in stats:   # an id carried at several positions of its tensor: their mean
        stats[name] = np.divide(stats[name], hits, out=np.zeros_like(stats[name]), where=hits > 0)
    return stats


def _loss(loss, y, outputs, where: str):
    if isinstance(outputs, (list, tuple, dict)) and len(outputs) != 1:
        raise DataError("criterion 'taylor' needs a model with one output", where)
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    try:
        return keras.ops.sum(loss(keras.ops.convert_to_tensor(y), outputs))
    except Exception as error:
        shape = tuple(getattr(outputs, "shape", ()))
        raise DataError(f"array 'y' (shape {tuple(np.shape(y))}, dtype {np.asarray(y).dtype}) does "
                        f"not fit the loss on the model's output (shape {shape}): "
                        f"{' '.join(str(error).split())[:160]}", where,
                        "give labels of the form the loss expects (class indices for "
                        "sparse_categorical_crossentropy, one-hot for categorical_crossentropy)") from None


def _capture(model: keras.Model, inputs, wanted: set[str], tape=None):
    """Run ``model`` on ``inputs`` in inference mode; also return the first output of every call
    whose key is in ``wanted`` (watched by ``tape``, if given)."""
    captured: dict[str, object] = {}

    def call(op, key, args, kwargs):
        out = op(*args, **kwargs)
        if key in wanted:
            first = out[0] if isinstance(out, (list, tuple)) else out
            if tape is not None:
                tape.watch(first)
            captured[key] = first
        return out

    return run_by_call(model, inputs, call), captured
