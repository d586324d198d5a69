"""Representative data: loaded once, checked against the model, read in bounded batches.

Data-driven criteria (``criteria.py``), ``evaluate``, ``sensitivity`` and fine-tuning read a
``Data``. It comes from

* a ``.npz`` file whose arrays are named after the model's inputs (``x`` for a one-input model)
  plus an optional ``y``;
* a ``.npy`` file: the inputs of a one-input model;
* in Python: a NumPy array (``x``), a tuple ``(x, y)``, a dict of arrays, a ``tf.data.Dataset``
  or any iterable of batches (each a ``x``, ``(x, y)`` or a dict).

Arrays are never copied whole: ``.npy`` files are memory-mapped and each batch is converted on
its own (``--batch-size``, default 32), so memory is bounded by one batch. Batches come in file
order, so every pass is deterministic. ``fingerprint()`` is the SHA-256 of every array's name,
dtype, shape and bytes (of every batch, for iterables), for plans to record.

A mismatch (a missing input, a wrong shape or dtype, no ``y`` where one is needed) is a
``DataError`` naming the array and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import CompilerError, clip

__all__ = ["Data", "DataError", "as_data", "load_data", "check_file", "DEFAULT_BATCH_SIZE",
           "DATA_HINT", "DATA_CRITERIA"]

DEFAULT_BATCH_SIZE = 32
DATA_CRITERIA = ("activation", "apoz", "taylor")     # the criteria that read data (criteria.py)
DATA_HINT = "pass --data FILE.npz (or add 'data:' to the spec; data= in the Python API)"


class DataError(CompilerError):
    """The data cannot be read, or does not fit the model (exit code 1)."""


class Data:
    """Inputs (by model input name, or positional) and optional labels, read in batches.

    ``arrays``: name -> array-like (``x``, the model's input names, ``y``); or ``batches``: an
    iterable (re-iterable for more than one pass) of ``(inputs, y)`` batches.
    """

    def __init__(self, arrays: dict[str, Any] | None = None, batches: Iterable | None = None,
                 where: str = "<data>", batch_size: int = DEFAULT_BATCH_SIZE):
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}", where)
        self.arrays, self._batches, self.where, self.batch_size = arrays, batches, where, batch_size
        self._fingerprint: str | None = None
        self._checked: dict[int, list[str]] = {}

    # -- what it holds -----------------------------------------------------------------------
    @property
    def has_y(self) -> bool:
        if self.arrays is not None:
            return "y" in self.arrays
        first = next(iter(self._batches), None)
        return first is not None and _split(first)[1] is not None

    def __len__(self) -> int:
        if self.arrays is None:
            return sum(len(_first(_split(b)[0])) for b in self._batches)
        return len(next(a for k, a in self.arrays.items() if k != "y"))

    def fingerprint(self) -> str:
        """SHA-256 over every array (name, dtype, shape, bytes), batch by batch for iterables."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            if self.arrays is not None:
                for name in sorted(self.arrays):
                    _hash(digest, name, self.arrays[name])
            else:
                for number, batch in enumerate(self._batches):
                    x, y = _split(batch)
                    for name, value in _named(x).items():
                        _hash(digest, f"{number}/{name}", value)
                    if y is not None:
                        _hash(digest, f"{number}/y", y)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    # -- reading ------------------------------------------------------------------------------
    def check(self, model, need_y: bool = False, why: str = "") -> list[str]:
        """Raise ``DataError`` unless every model input has an array of its shape and dtype
        (and ``y``, when ``need_y``); return the array names in model input order."""
        key = (id(model), need_y)
        if key in self._checked:
            return self._checked[key]
        names = [t.name for t in model.inputs]
        if self.arrays is not None:
            available = {k: v for k, v in self.arrays.items() if k != "y"}
        else:
            first = next(iter(self._batches), None)
            if first is None:
                raise DataError("the data holds no batch", self.where)
            available = _named(_split(first)[0])
        order = _input_order(names, available, self.where)
        for name, array_name in zip(model.inputs, order):
            _check_array(array_name, available[array_name], name, self.where)
        if self.arrays is not None:
            sizes = {k: len(v) for k, v in self.arrays.items()}
            if len(set(sizes.values())) > 1:
                raise DataError("arrays have different numbers of samples: " + ", ".join(
                    f"'{k}' {n}" for k, n in sizes.items()), self.where,
                    "every array needs one entry per sample")
            if not min(sizes.values(), default=0):
                raise DataError("the data holds no sample", self.where)
        if need_y and not self.has_y:
            raise DataError(f"no array 'y' (labels){why}", self.where,
                            "add the labels as 'y' to the .npz file (np.savez(path, x=x, y=y))")
        self._checked[key] = order
        return order

    def batches(self, model, need_y: bool = False) -> Iterator[tuple[list[np.ndarray], Any]]:
        """``(inputs in model input order, y or None)`` batch by batch, in a fixed order."""
        order = self.check(model, need_y)
        if self.arrays is not None:
            n = len(self)
            y = self.arrays.get("y")
            for start in range(0, n, self.batch_size):
                stop = min(n, start + self.batch_size)
                inputs = [_as_input(self.arrays[k][start:stop], t) for k, t in zip(order, model.inputs)]
                yield inputs, None if y is None else np.asarray(y[start:stop])
            return
        for batch in self._batches:
            x, y = _split(batch)
            named = _named(x)
            inputs = [_as_input(named[k], t) for k, t in zip(order, model.inputs)]
            yield inputs, None if y is None else np.asarray(y)

    def progress(self, iterable, label: str):
        """``iterable`` with a one-line progress count on stderr when it is a terminal."""
        if not sys.stderr.isatty():
            yield from iterable
            return
        total = -(-len(self) // self.batch_size) if self.arrays is not None else None
        for number, item in enumerate(iterable, start=1):
            sys.stderr.write(f"\r{label}: batch {number}" + (f"/{total}" if total else ""))
            sys.stderr.flush()
            yield item
        sys.stderr.write("\r\033[K")


def as_data(source, batch_size: int = DEFAULT_BATCH_SIZE, where: str | None = None) -> Data:
    """A ``Data`` from a path, array, ``(x, y)``, dict, ``tf.data.Dataset``, iterable of batches
    or ``Data`` (which is returned as is)."""
    if isinstance(source, Data):
        return source
    if isinstance(source, (str, os.PathLike)):
        return load_data(source, batch_size)
    where = where or "<data>"
    if isinstance(source, np.ndarray):
        return Data({"x": source}, where=where, batch_size=batch_size)
    if isinstance(source, dict):
        return Data(dict(source), where=where, batch_size=batch_size)
    if isinstance(source, tuple) and len(source) == 2 and all(
            isinstance(part, (np.ndarray, dict, list)) for part in source):
        x, y = source
        arrays = dict(x) if isinstance(x, dict) else \
            {f"x{i}": a for i, a in enumerate(x)} if isinstance(x, list) else {"x": x}
        arrays["y"] = np.asarray(y)
        return Data(arrays, where=where, batch_size=batch_size)
    if _is_dataset(source):
        return Data(batches=_NumpyBatches(source), where=where or "<tf.data.Dataset>",
                    batch_size=batch_size)
    if isinstance(source, Iterable):
        batches = source if not iter(source) is source else list(source)  # a generator: once
        return Data(batches=batches, where=where, batch_size=batch_size)
    raise DataError(f"cannot use a {type(source).__name__} as data", where,
                    "give a .npz/.npy path, a NumPy array, (x, y), a dict of arrays, a "
                    "tf.data.Dataset or an iterable of batches")


def check_file(path: str | os.PathLike) -> str:
    """``path`` as a string if it names a file, else a one-line ``DataError``."""
    where = os.fsdecode(path)
    if not os.path.isfile(where):
        raise DataError("data file not found", where, "check the path (a spec's 'data:' is "
                        "relative to the spec file)")
    return where


def load_data(path: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE) -> Data:
    """Read a ``.npz`` (arrays by input name, ``y``) or ``.npy`` (one input) file."""
    where = check_file(path)
    try:
        if where.lower().endswith(".npy"):
            return Data({"x": np.load(where, mmap_mode="r", allow_pickle=False)}, where=where,
                        batch_size=batch_size)
        if not zipfile.is_zipfile(where):
            raise DataError("not a .npz or .npy file", where,
                            "save arrays with np.savez(path, x=x, y=y) or np.save(path, x)")
        archive = np.load(where, allow_pickle=False)
        arrays = {name: archive[name] for name in archive.files}
    except DataError:
        raise
    except Exception as error:   # a truncated file, an object array, ...: one line
        raise DataError(f"cannot read data: {clip(' '.join(str(error).split()), 200)}", where,
                        "save arrays with np.savez(path, x=x, y=y) (no object arrays)") from None
    if not arrays:
        raise DataError("the .npz file holds no array", where)
    return Data(arrays, where=where, batch_size=batch_size)


# -- helpers -------------------------------------------------------------------------------------
def _split(batch) -> tuple[Any, Any]:
    if isinstance(batch, tuple) and len(batch) in (2, 3):   # Keras' (x, y[, sample_weight])
        return batch[0], batch[1]
    if isinstance(batch, dict) and "y" in batch:
        return {k: v for k, v in batch.items() if k != "y"}, batch["y"]
    return batch, None


def _named(x) -> dict[str, Any]:
    if isinstance(x, dict):
        return dict(x)
    if isinstance(x, (list, tuple)):
        return {f"x{i}": v for i, v in enumerate(x)}
    return {"x": x}


def _first(x):
    return next(iter(_named(x).values()))


def _input_order(names: list[str], available: dict[str, Any], where: str) -> list[str]:
    """Which array feeds each model input: by input name, else ``x`` (one input) or ``x0..``."""
    if all(name in available for name in names):
        return names
    if len(names) == 1 and "x" in available:
        return ["x"]
    positional = [f"x{i}" for i in range(len(names))]
    if all(name in available for name in positional):
        return positional
    missing = next(name for name in names if name not in available)
    expected = "'x' or " if len(names) == 1 else ""
    raise DataError(f"no array for model input '{missing}'", where,
                    f"expected arrays {expected}{', '.join(repr(n) for n in names)} (and optional "
                    f"'y'); found {', '.join(repr(k) for k in available) or 'none'}")


def _check_array(name: str, value, tensor, where: str) -> None:
    shape, dtype = tuple(value.shape), np.dtype(getattr(value, "dtype", np.float32))
    expected = tuple(tensor.shape)
    want = "(N, " + ", ".join("?" if d is None else str(d) for d in expected[1:]) + ")"
    if len(shape) != len(expected) or any(e is not None and e != s
                                          for s, e in zip(shape[1:], expected[1:])):
        raise DataError(f"array '{name}' has shape {shape}, but model input '{tensor.name}' "
                        f"expects {want}", where, "reshape it to the model's input shape")
    numeric = np.issubdtype(dtype, np.number) or dtype == np.bool_
    if not numeric or ("int" in str(tensor.dtype) and np.issubdtype(dtype, np.floating)):
        raise DataError(f"array '{name}' has dtype {dtype}, but model input '{tensor.name}' "
                        f"expects {tensor.dtype}", where, f"convert it with .astype('{tensor.dtype}')")


def _as_input(value, tensor) -> np.ndarray:
    return np.asarray(value).astype(str(tensor.dtype), copy=False)


def _hash(digest, name: str, value) -> None:
    value = np.ascontiguousarray(np.asarray(value))
    digest.update(json.dumps([name, str(value.dtype), list(value.shape)]).encode() + b"\n")
    digest.update(value.tobytes())


def _is_dataset(source) -> bool:
    module = type(source).__module__ or ""
    return module.startswith("tensorflow") and hasattr(source, "as_numpy_iterator")


class _NumpyBatches:
    """A re-iterable view of a ``tf.data.Dataset`` as NumPy batches."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        return iter(self.dataset.as_numpy_iterator())
