"""Fine-tuning a rebuilt model, and giving it the original's compile configuration.

``finetune(model, data, epochs, settings, config)`` trains in place, batch by batch in the data's
order (no shuffling: the same data gives the same weights). Each setting comes from the spec's
``finetune:`` mapping, else the original model's compile configuration, else a default: loss (the
spec's ``finetune.loss``, the model's loss, the spec's ``loss:``, else inferred as
``evaluate.choose_loss`` does), optimizer class (``adam``), learning rate (1e-4: fine-tuning
nudges weights that already work) and batch size (``--batch-size``).

Whether fine-tuned or not, ``recompile(model, config)`` then compiles the written model exactly as
the original was compiled (loss, metrics, optimizer class and its settings), so ``fit`` works on
the output without the user compiling it again.
"""

from __future__ import annotations

import keras
import numpy as np

from .data import Data
from .errors import CompilerError
from .evaluate import choose_loss

__all__ = ["finetune", "recompile", "DEFAULT_LEARNING_RATE"]

DEFAULT_LEARNING_RATE = 1e-4


def recompile(model: keras.Model, config: dict | None) -> keras.Model:
    """Compile ``model`` as ``config`` (a ``get_compile_config()``) says; nothing if None."""
    if config:
        try:
            model.compile_from_config(config)
        except Exception as error:
            raise CompilerError(f"cannot compile the rebuilt model as the original was: "
                                f"{' '.join(str(error).split())[:200]}") from None
    return model


def finetune(model: keras.Model, data: Data, epochs: int, settings=None, config: dict | None = None,
             spec_loss: str | None = None, seed: int = 0) -> keras.Model:
    """Train ``model`` for ``epochs`` passes over ``data`` (which needs ``y``)."""
    settings, config = dict(settings or {}), config or {}
    keras.utils.set_random_seed(seed)
    loss = settings.get("loss") or _loss_from(config) or spec_loss
    optimizer_name = settings.get("optimizer")
    if optimizer_name is None and isinstance(config.get("optimizer"), dict):
        optimizer_name = config["optimizer"].get("class_name")
    try:
        optimizer = keras.optimizers.get(optimizer_name or "adam")
        optimizer.learning_rate = float(settings.get("learning_rate", DEFAULT_LEARNING_RATE))
    except (ValueError, TypeError) as error:
        raise CompilerError(f"unknown optimizer {optimizer_name!r}", hint="use a Keras optimizer "
                            "identifier such as adam, sgd, rmsprop") from error
    batch_size = int(settings.get("batch_size", data.batch_size))
    source = Data(data.arrays, data._batches, data.where, batch_size) if data.arrays is not None else data
    if loss is None:
        inputs, y = next(source.batches(model, need_y=True))
        loss = choose_loss(y, keras.ops.convert_to_numpy(model(inputs if len(inputs) > 1 else inputs[0])))
    model.compile(optimizer=optimizer, loss=loss)
    for _ in range(epochs):
        for inputs, y in source.progress(source.batches(model, need_y=True), "fine-tuning"):
            model.train_on_batch(inputs if len(inputs) > 1 else inputs[0], np.asarray(y))
    return model


def _loss_from(config: dict):
    loss = config.get("loss")
    if isinstance(loss, str):
        return loss
    if isinstance(loss, dict):
        try:
            return keras.saving.deserialize_keras_object(loss)
        except Exception:
            return None
    return None
