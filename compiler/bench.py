"""``prunec bench MODEL [PRUNED]``: what a shrink bought, measured on this machine's CPU.

For each batch size (1 and 32 by default) each model runs ``warmup`` untimed calls, then
``repeats`` timed calls of ``model(x, training=False)`` (the array copied back to the host, so
lazy backends finish their work); with two models the calls alternate (original, pruned,
original, ...) so that a machine getting busier or cooler affects both alike. The table shows
medians, the speedup, parameters and the file's size on disk. Inputs are the random inputs
verification uses, at 32 pixels where a spatial size is free.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import keras

from .modelio import load_model
from .report import align_columns
from .verify import random_inputs

__all__ = ["Bench", "benchmark", "format_bench"]


@dataclass(frozen=True)
class Bench:
    path: str
    params: int
    size: int                               # bytes on disk (a directory: all its files)
    latency: dict[int, float]               # batch -> median seconds per call


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
                   for f in files)
    return os.path.getsize(path)


def _call(model, feed) -> None:
    outputs = model(feed, training=False)
    for output in keras.tree.flatten(outputs):
        keras.ops.convert_to_numpy(output)


def benchmark(paths: list[str], batches: list[int], repeats: int = 30, warmup: int = 5,
              trust: bool = False) -> list[Bench]:
    """Median latency per batch size of each model in ``paths``, timed in alternation."""
    models = [load_model(path, trust=trust) for path in paths]
    latency: list[dict[int, float]] = [{} for _ in models]
    for batch in batches:
        feeds = []
        for model in models:
            feeds.append(random_inputs(model, batch=batch))     # as the model takes them
        for model, feed in zip(models, feeds):
            for _ in range(warmup):
                _call(model, feed)
        times: list[list[float]] = [[] for _ in models]
        for _ in range(repeats):
            for i, (model, feed) in enumerate(zip(models, feeds)):
                start = time.perf_counter()
                _call(model, feed)
                times[i].append(time.perf_counter() - start)
        for i in range(len(models)):
            latency[i][batch] = statistics.median(times[i])
    return [Bench(path, int(model.count_params()), _size(path), lat)
            for path, model, lat in zip(paths, models, latency)]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def format_bench(rows: list[Bench], batches: list[int]) -> str:
    """A table: one row per model, then (two models) the ratio original / pruned."""
    header = ["model", "params", "size"] + [f"batch {b}" for b in batches]
    table = [header]
    for row in rows:
        table.append([row.path, f"{row.params:,}", _mb(row.size)]
                     + [_ms(row.latency[b]) for b in batches])
    if len(rows) == 2:
        a, b = rows
        ratio = lambda x, y: f"{x / y:.2f}x" if y else "-"   # noqa: E731
        table.append(["original / pruned", ratio(a.params, b.params), ratio(a.size, b.size)]
                     + [ratio(a.latency[n], b.latency[n]) for n in batches])
    backend = keras.backend.backend()
    return "\n".join(align_columns(table)) + (
        f"\nmedian latency per call on this CPU ({backend} backend, {os.cpu_count()} cores)\n")


