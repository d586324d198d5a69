"""Where the jobs of ``prunec apply ... --out-dir DIR`` run: local processes, or a Ray cluster.

Both executors give every model the same guarantees, so the summary table, progress and exit
codes do not depend on where it ran:

* **Recycled workers.** A worker process runs at most ``per_worker`` models (default 1) and is
  then replaced: TensorFlow keeps memory after a model is freed, and a fleet rewrite must not
  grow until the machine swaps.
* **A per-model timeout** (``--timeout``), counted from the moment the model starts in its worker
  (Keras imported): the worker is killed and the model fails with a one-line error (exit 1).
* **Retries for crashes, not for bad input.** A worker that dies (killed, out of memory) has its
  model run again, up to ``retries`` times, in a fresh worker; a model whose *input* is wrong
  returns its error normally and is never retried. A model that keeps killing its worker fails
  as an internal error (exit 3).

* **Ctrl-C** starts nothing new; the models already running finish whole and count, like every
  model finished before it; the rest come back ``interrupted`` (exit 130).

``local`` (``local_executor.py``) is a pool of ``spawn``-ed processes (TensorFlow is not
fork-safe); with one job and no timeout it runs in this process, as before. ``ray``
(``ray_executor.py``) submits each model as a Ray task declaring its CPUs and memory; it joins
the cluster at ``address``, or starts a quiet local instance (no dashboard, ``jobs`` CPUs) and
shuts it down afterwards. Paths in jobs are used as given: on a cluster they must name storage
every node shares. This module holds what both share: the options, the dispatch, the rows of a
model that timed out or whose worker died, and the JSON summary.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

from .batch import Job, Progress, Result, run_job

__all__ = ["Options", "execute", "parse_size", "timed_out", "died", "summary_to_dict", "prepare_keras"]


@dataclass(frozen=True)
class Options:
    """How to run a batch: ``executor`` ('local' or 'ray') and its limits."""

    executor: str = "local"
    jobs: int = 1
    timeout: float | None = None          # seconds per model; None: no limit
    retries: int = 1                      # re-runs of a model whose worker died
    per_worker: int = 1                   # models a worker runs before it is replaced
    address: str | None = None            # ray: a cluster to join; None: start a local one
    cpus: float = 1.0                     # ray: CPUs each model declares
    memory: int | None = 2 * 1024 ** 3    # ray: bytes each model declares


def prepare_keras() -> None:
    """A worker's start-up (the default ``prepare``): import Keras without TensorFlow's chatter."""
    from .runtime import import_keras_quietly
    import_keras_quietly()


def execute(jobs: list[Job], options: Options, progress: Progress | None = None,
            run: Callable[[Job], Result] = run_job,
            prepare: Callable[[], None] | None = prepare_keras) -> list[Result]:
    """Every job's result, in the order of ``jobs``, run as ``options`` say.

    ``run`` (and ``prepare``, run once per worker before its first model) must be module-level
    functions: they are sent to worker processes by name.
    """
    progress = progress or Progress(len(jobs), enabled=False)
    results: dict[int, Result] = {}
    try:
        if options.executor == "ray":
            from .ray_executor import run_ray
            run_ray(jobs, options, progress, run, prepare, results)
        elif options.jobs <= 1 and options.timeout is None:
            for index, job in enumerate(jobs):      # in this process, one after the other
                progress.start(job.model)
                started = time.monotonic()
                results[index] = dataclasses.replace(run(job), seconds=time.monotonic() - started)
                progress.done(results[index])
        else:
            from .local_executor import run_local
            run_local(jobs, options, progress, run, prepare, results)
    except KeyboardInterrupt:   # nothing new started; what finished counts, the rest is said
        for index, job in enumerate(jobs):
            results.setdefault(index, Result(job.model, job.output, interrupted=True,
                                             error=f"{job.model}: interrupted, not written"))
    return [results[i] for i in range(len(jobs))]


def timed_out(job: Job, timeout: float) -> Result:
    return Result(job.model, job.output, seconds=timeout,
                  error=f"{job.model}: timed out after {timeout:g} s; its worker was stopped and "
                        "nothing was written (hint: raise --timeout)")


def died(job: Job, attempts: int, worker: str = "worker process") -> Result:
    times = "" if attempts == 1 else f" {attempts} times"
    more = " or more --memory-per-model" if "Ray" in worker else ""
    return Result(job.model, job.output, internal=True,
                  error=f"{job.model}: internal error: the {worker} running this model "
                        f"died{times} (hint: it may have run out of memory; try fewer --jobs{more})")


def parse_size(text: str) -> int:
    """``'2G'``, ``'512M'``, ``'1.5GiB'``, ``'1000000'`` -> bytes (binary multiples)."""
    units = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}
    value = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = value[-1:] if value[-1:] in units and value[-1:] else ""
    try:
        number = float(value[:-1] if unit else value)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 2G, 512M)") from None
    if number <= 0:
        raise ValueError(f"not a positive size: {text!r}")
    return int(number * units[unit])


def summary_to_dict(results: list[Result], out_dir: str, options: Options) -> dict:
    """The summary as JSON data (``--summary FILE``), for the pipeline driving a rewrite."""
    def row(r: Result) -> dict:
        pair = lambda p: None if p is None else {"before": p[0], "after": p[1]}   # noqa: E731
        return {"model": r.model, "output": r.output if r.ok else None, "ok": r.ok,
                "params": pair(r.params), "flops": pair(r.flops),
                "verified_difference": r.difference, "error": r.error,
                "internal": r.internal if not r.ok else False,
                "export": None if not (r.ok and r.export) else
                {"format": r.export[0], "path": r.export[1], "verified_difference": r.export[2]},
                "seconds": None if r.seconds is None else round(r.seconds, 3)}
    failed = sum(not r.ok for r in results)
    return {"version": 1, "out_dir": out_dir, "executor": options.executor,
            "models": [row(r) for r in results], "written": len(results) - failed,
            "failed": failed,
            "exit_code": 3 if any(r.internal for r in results) else 1 if failed else 0}
