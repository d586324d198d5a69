"""Measuring a model on data: loss, accuracy and the model's own compiled metrics.

``evaluate(model, data)`` runs the model in inference mode one batch at a time and returns
``{"loss", "accuracy", "samples", <compiled metrics>}``. The loss is, in order: the one given,
the model's compiled loss (a ``.keras`` file's ``compile_config``, read even though prunec loads
models uncompiled), or one inferred from the labels: integer class labels -> sparse categorical
cross-entropy, one-hot labels -> categorical cross-entropy, one output column -> binary
cross-entropy, else mean squared error; outputs that are not probabilities (rows not summing to 1)
are treated as logits. Accuracy compares ``argmax`` of the output with the class label (or the
one-hot label's ``argmax``; ``> 0.5`` for one output column).
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np

from .data import Data, DataError

__all__ = ["evaluate", "compile_config", "choose_loss", "format_metrics", "accuracy_of"]


def compile_config(model: keras.Model | None = None, path: str | os.PathLike | None = None) -> dict | None:
    """The model's compile configuration: its own if compiled, else the one its ``.keras`` file
    carried (recorded by ``modelio.load_model``, or read from ``path``)."""
    from .modelio import compile_config as kept_config, saved_compile_config
    config = kept_config(model) if model is not None else None
    if not config and path is not None:
        config = saved_compile_config(path)
    return config or None


def choose_loss(y: np.ndarray, outputs: np.ndarray, given=None):
    """A per-sample Keras loss for ``y`` and ``outputs`` (see the module docstring)."""
    if given is not None:
        loss = keras.losses.get(given) if isinstance(given, (str, dict)) else given
        if isinstance(loss, keras.losses.Loss):
            return _per_sample(loss)
        return loss
    outputs = np.asarray(outputs)
    probabilities = bool(outputs.min() >= 0 and np.allclose(outputs.sum(-1), 1, atol=1e-3))
    width = outputs.shape[-1] if outputs.ndim > 1 else 1
    y = np.asarray(y)
    if width > 1 and np.issubdtype(y.dtype, np.integer) and y.ndim == outputs.ndim - 1:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities, reduction=None)
    if width > 1 and y.shape[1:] == outputs.shape[1:]:
        return keras.losses.CategoricalCrossentropy(from_logits=not probabilities, reduction=None)
    if width == 1:
        in_range = outputs.min() >= 0 and outputs.max() <= 1
        return keras.losses.BinaryCrossentropy(from_logits=not in_range, reduction=None)
    return keras.losses.MeanSquaredError(reduction=None)


def _per_sample(loss: keras.losses.Loss):
    """A compiled loss object reduces over the batch when called; its ``call`` is the loss of
    each sample (a user's ``Loss`` subclass need not take ``reduction`` in its config)."""
    def per_sample(y_true, y_pred):
        return loss.call(keras.ops.convert_to_tensor(y_true, dtype=loss.dtype),
                         keras.ops.convert_to_tensor(y_pred, dtype=loss.dtype))
    return per_sample


def accuracy_of(y: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Per sample: 1.0 where the prediction is the label."""
    outputs, y = np.asarray(outputs), np.asarray(y)
    if outputs.ndim > 1 and outputs.shape[-1] > 1:
        predicted = outputs.argmax(-1)
        label = y.argmax(-1) if y.shape == outputs.shape else y.reshape(predicted.shape)
        return (predicted == label).astype(np.float64).reshape(len(y), -1).mean(1)
    return ((outputs.reshape(len(y), -1) > 0.5) == (y.reshape(len(y), -1) > 0.5)).mean(1)


def evaluate(model: keras.Model, data: Data, loss=None, config: dict | None = None) -> dict:
    """``{"loss", "accuracy", "samples", ...}`` of ``model`` on ``data`` (which needs ``y``)."""
    if len(model.outputs) != 1:
        raise DataError("evaluate needs a model with one output", data.where)
    config = config or {}
    loss = loss if loss is not None else _config_loss(config)
    metrics = _compiled_metrics(config)
    totals = {"loss": 0.0, "accuracy": 0.0}
    samples = 0
    fn = None
    for inputs, y in data.progress(data.batches(model, need_y=True), "evaluating"):
        outputs = keras.ops.convert_to_numpy(model(inputs if len(inputs) > 1 else inputs[0],
                                                   training=False))
        if len(y) != len(outputs):
            raise DataError(f"array 'y' has {len(y)} samples in a batch of {len(outputs)}", data.where)
        if fn is None:
            fn = choose_loss(y, outputs, loss)
        try:
            per_sample = keras.ops.convert_to_numpy(fn(keras.ops.convert_to_tensor(y), outputs))
        except Exception as error:
            raise DataError(f"array 'y' (shape {y.shape}) does not fit the loss on the model's "
                            f"output (shape {outputs.shape}): {' '.join(str(error).split())[:160]}",
                            data.where) from None
        per_sample = np.asarray(per_sample, dtype=np.float64).reshape(len(y), -1).mean(1)
        totals["loss"] += float(per_sample.sum())
        totals["accuracy"] += float(accuracy_of(y, outputs).sum())
        for metric in metrics.values():
            metric.update_state(y, outputs)
        samples += len(y)
    result = {key: value / max(samples, 1) for key, value in totals.items()}
    for name, metric in metrics.items():
        if name not in result:
            result[name] = float(keras.ops.convert_to_numpy(metric.result()))
    result["samples"] = samples
    return result


def _config_loss(config: dict):
    loss = config.get("loss")
    if loss is None:
        return None
    try:
        return keras.losses.get(loss) if isinstance(loss, str) else \
            keras.saving.deserialize_keras_object(loss)
    except Exception:
        return None


def _compiled_metrics(config: dict) -> dict:
    """The compiled metrics other than accuracy and loss (those are computed above)."""
    found = {}
    metrics = config.get("metrics") or []
    items = [m for v in metrics.values() for m in (v if isinstance(v, list) else [v])] \
        if isinstance(metrics, dict) else list(metrics)
    for item in items:
        try:
            metric = keras.metrics.get(item) if isinstance(item, str) else \
                keras.saving.deserialize_keras_object(item)
        except Exception:
            continue
        if not isinstance(metric, keras.metrics.Metric):
            metric = keras.metrics.MeanMetricWrapper(metric, name=getattr(metric, "__name__", str(item)))
        if metric.name not in ("accuracy", "acc", "loss"):
            found[metric.name] = metric
    return found


def format_metrics(result: dict, fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps(result, indent=2, sort_keys=False) + "\n"
    return "".join(f"{key}: {value:.6g}\n" if isinstance(value, float) else f"{key}: {value}\n"
                   for key, value in result.items())
