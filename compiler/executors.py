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

``local`` is a pool of ``spawn``-ed processes (TensorFlow is not fork-safe); with one job and no
timeout it runs in this process, as before. ``ray`` submits each model as a Ray task declaring
its CPUs and memory (``max_calls`` recycles workers, ``max_retries`` retries system failures
only); it joins the cluster at ``address``, or starts a quiet local instance (no dashboard,
``jobs`` CPUs) and shuts it down afterwards. Paths in jobs are used as given: on a cluster they
must name storage every node shares.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import signal
import multiprocessing.connection
import os
import re
import time
from dataclasses import dataclass
from typing import Callable

from .batch import Job, Progress, Result, run_job
from .errors import CompilerError

__all__ = ["Options", "execute", "run_local", "run_ray", "parse_size", "timed_out", "died",
           "summary_to_dict"]


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


def _import_keras() -> None:
    from .runtime import import_keras_quietly
    import_keras_quietly()


def execute(jobs: list[Job], options: Options, progress: Progress | None = None,
            run: Callable[[Job], Result] = run_job,
            prepare: Callable[[], None] | None = _import_keras) -> list[Result]:
    """Every job's result, in the order of ``jobs``, run as ``options`` say.

    ``run`` (and ``prepare``, run once per worker before its first model) must be module-level
    functions: they are sent to worker processes by name.
    """
    progress = progress or Progress(len(jobs), enabled=False)
    results: dict[int, Result] = {}
    try:
        if options.executor == "ray":
            results.update(enumerate(run_ray(jobs, options, progress, run, prepare)))
        elif options.jobs <= 1 and options.timeout is None:
            for index, job in enumerate(jobs):      # in this process, one after the other
                progress.start(job.model)
                started = time.monotonic()
                results[index] = dataclasses.replace(run(job), seconds=time.monotonic() - started)
                progress.done(results[index])
        else:
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


# --- local processes -------------------------------------------------------------------------

def _worker(conn, run, prepare, per_worker: int) -> None:
    """A worker process: run up to ``per_worker`` jobs sent over ``conn``, then exit. Ctrl-C is
    the parent's to handle: a running model finishes whole."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if prepare is not None:
        prepare()
    for _ in range(per_worker):
        message = conn.recv()
        if message is None:
            break
        index, job = message
        conn.send(("start", index))
        started = time.monotonic()
        result = run(job)
        conn.send(("done", index, dataclasses.replace(result, seconds=time.monotonic() - started)))
    conn.close()


class _Slot:
    """One worker process, the job it runs and since when (``started`` None: still starting)."""

    def __init__(self, context, run, prepare, per_worker):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, run, prepare, per_worker),
                                       daemon=True)
        self.process.start()
        child.close()
        self.left, self.index, self.started = per_worker, None, None

    def give(self, index: int, job: Job) -> None:
        self.conn.send((index, job))
        self.index, self.started, self.left = index, None, self.left - 1

    def stop(self, kill: bool = False) -> None:
        if self.process.is_alive():
            self.process.kill() if kill else self.process.terminate()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def run_local(jobs: list[Job], options: Options, progress: Progress,
              run: Callable[[Job], Result] = run_job,
              prepare: Callable[[], None] | None = _import_keras,
              results: dict[int, Result] | None = None) -> list[Result]:
    """Run ``jobs`` in up to ``options.jobs`` spawned processes (see the module's docstring),
    filling ``results``; on Ctrl-C the running models finish and are recorded, then it re-raises."""
    context = multiprocessing.get_context("spawn")
    queue = collections.deque(range(len(jobs)))
    attempts = [0] * len(jobs)
    results = {} if results is None else results
    slots: list[_Slot] = []
    width = max(1, min(options.jobs, len(jobs)))

    def finish(index: int, result: Result) -> None:
        results[index] = result
        progress.done(result)

    try:
        while len(results) < len(jobs):
            for slot in [s for s in slots if s.index is None and (s.left == 0 or not queue)]:
                if slot.left:                      # an idle worker with nothing left to do
                    try:
                        slot.conn.send(None)
                    except OSError:
                        pass
                slot.stop()
                slots.remove(slot)
            while queue and len([s for s in slots if s.index is not None]) < width:
                idle = next((s for s in slots if s.index is None), None)
                if idle is None:
                    idle = _Slot(context, run, prepare, options.per_worker)
                    slots.append(idle)
                index = queue.popleft()
                attempts[index] += 1
                progress.start(jobs[index].model)
                idle.give(index, jobs[index])
            busy = [s for s in slots if s.index is not None]
            now = time.monotonic()
            wait = 0.5
            if options.timeout is not None:
                for slot in busy:
                    if slot.started is not None:
                        wait = min(wait, max(0.0, slot.started + options.timeout - now))
            ready = multiprocessing.connection.wait(
                [s.conn for s in busy] + [s.process.sentinel for s in busy], wait)
            for slot in busy:
                dead = False
                while slot.conn in ready and slot.index is not None and slot.conn.poll():
                    try:
                        message = slot.conn.recv()
                    except (EOFError, OSError):   # the pipe closed: the worker is gone
                        dead = True
                        break
                    if message[0] == "start":
                        slot.started = time.monotonic()
                    else:
                        finish(message[1], message[2])
                        slot.index = None
                if slot.index is None:
                    continue
                if dead or (slot.process.sentinel in ready and not slot.conn.poll()):   # died
                    index, slot.index = slot.index, None
                    slots.remove(slot)
                    slot.stop()
                    if attempts[index] <= options.retries:
                        queue.appendleft(index)
                    else:
                        finish(index, died(jobs[index], attempts[index]))
                elif (options.timeout is not None and slot.started is not None
                      and time.monotonic() - slot.started >= options.timeout):
                    index, slot.index = slot.index, None
                    slots.remove(slot)
                    slot.stop(kill=True)
                    finish(index, timed_out(jobs[index], options.timeout))
    except KeyboardInterrupt:
        for slot in slots:                      # the workers ignore it: wait for their models
            while slot.index is not None:
                try:
                    message = slot.conn.recv()
                except (EOFError, OSError):
                    break
                if message[0] == "done":
                    finish(message[1], message[2])
                    slot.index = None
        raise
    finally:
        for slot in slots:
            slot.stop()
    return [results[i] for i in range(len(jobs))]


# --- Ray -------------------------------------------------------------------------------------

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


def _import_ray():
    try:
        import ray
    except ImportError:
        raise CompilerError("--executor ray needs Ray, which is not installed", "apply",
                            "pip install 'prunec[ray]'") from None
    return ray


def _ray_task(clock, index: int, job: Job, run, prepare) -> Result:
    """One model in a Ray worker: tell the clock it started (after ``prepare``), run it."""
    import ray
    if prepare is not None:
        prepare()
    ray.get(clock.start.remote(index))
    started = time.monotonic()
    result = run(job)
    return dataclasses.replace(result, seconds=time.monotonic() - started)


class _Clock:
    """A Ray actor: when each running model started in its worker, on one clock for the whole
    cluster (the driver's and the workers' clocks need not agree)."""

    def __init__(self):
        self.started: dict[int, float] = {}

    def start(self, index: int) -> None:
        self.started[index] = time.monotonic()

    def expired(self, timeout: float) -> list[int]:
        now = time.monotonic()
        return [i for i, t in self.started.items() if now - t >= timeout]

    def forget(self, index: int) -> None:
        self.started.pop(index, None)


def _start_ray(ray, options: Options) -> bool:
    """Join ``options.address``, or start a quiet local instance; True if this call started it."""
    if ray.is_initialized():
        return False
    environment = {name: os.environ[name] for name in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")
                   if name in os.environ}
    settings = dict(include_dashboard=False, log_to_driver=False, logging_level="error",
                    runtime_env={"env_vars": environment})
    if options.address is None:    # local workers import what this process imports
        settings.update(num_cpus=max(1, options.jobs), object_store_memory=128 * 1024 ** 2)
        environment["PYTHONPATH"] = os.pathsep.join(_source_paths())
    else:
        settings.update(address=options.address)
    saved = os.dup(2)
    try:     # Ray prints its start-up notes to file descriptor 2: errors stay one line each
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            ray.init(**settings)
    except Exception as error:
        raise CompilerError(f"cannot start or join Ray: {' '.join(str(error).split())[:300]}",
                            options.address or "ray", "check --address (ray://HOST:10001 or "
                            "HOST:6379), or leave it out to start Ray locally") from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return True


def _source_paths() -> list[str]:
    """This process's import path less Python's own and installed packages' directories."""
    import sys
    import sysconfig
    skip = {os.path.realpath(p) for key in ("stdlib", "platstdlib", "purelib", "platlib")
            if (p := sysconfig.get_paths().get(key))}
    return [os.path.abspath(p or ".") for p in sys.path
            if os.path.isdir(p or ".") and os.path.realpath(p or ".") not in skip
            and not p.endswith((".zip", "lib-dynload"))]


def run_ray(jobs: list[Job], options: Options, progress: Progress,
            run: Callable[[Job], Result] = run_job,
            prepare: Callable[[], None] | None = _import_keras) -> list[Result]:
    """Run each job as a Ray task (see the module's docstring); results in the order of ``jobs``."""
    ray = _import_ray()
    started_here = _start_ray(ray, options)
    refs: dict = {}
    quiet = _Quiet(progress)
    try:
        clock = ray.remote(num_cpus=0)(_Clock).remote()
        # Retries are the driver's (max_retries=0): a crash reaches it at once, and its clock
        # is stopped before the model runs again, so a retry never inherits a timeout.
        resources = dict(num_cpus=options.cpus, max_calls=options.per_worker, max_retries=0)
        if options.memory:
            resources["memory"] = options.memory
        task = ray.remote(**resources)(_ray_task)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // max(options.cpus, 1e-3)))
        queue = collections.deque(range(len(jobs)))
        attempts = [0] * len(jobs)
        results: dict[int, Result] = {}

        def finish(index: int, result: Result) -> None:
            ray.get(clock.forget.remote(index))
            results[index] = result
            progress.done(result)

        while len(results) < len(jobs):
            while queue and len(refs) < 2 * slots:   # a window, not thousands of queued tasks
                index = queue.popleft()
                attempts[index] += 1
                progress.start(jobs[index].model)
                refs[task.remote(clock, index, jobs[index], run, prepare)] = index
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.25)
            for ref in ready:
                index = refs.pop(ref)
                try:
                    finish(index, ray.get(ref))
                except ray.exceptions.WorkerCrashedError:
                    if attempts[index] <= options.retries:
                        ray.get(clock.forget.remote(index))
                        queue.appendleft(index)
                    else:
                        finish(index, died(jobs[index], attempts[index], "Ray worker"))
                except ray.exceptions.RayError as error:   # the node died, out of memory...
                    finish(index, _ray_failed(jobs[index], error))
            if options.timeout is not None and refs:
                expired = set(ray.get(clock.expired.remote(options.timeout)))
                for ref, index in list(refs.items()):
                    if index in expired:
                        ray.cancel(ref, force=True)
                        del refs[ref]
                        finish(index, timed_out(jobs[index], options.timeout))
        return [results[i] for i in range(len(jobs))]
    finally:
        for ref in refs:      # Ctrl-C or an error here: stop what is still running
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
        quiet.close()


class _Quiet:
    """File descriptor 2 to /dev/null while Ray runs (its driver prints worker deaths and
    retries there itself), with ``progress`` still drawn on the real stderr."""

    def __init__(self, progress: Progress):
        import sys
        sys.stderr.flush()
        self.progress, self.stream = progress, progress.stream
        self.saved = os.dup(2)
        if self.stream is sys.__stderr__ or getattr(self.stream, "fileno", None) and \
                _fileno(self.stream) == 2:
            progress.stream = os.fdopen(os.dup(self.saved), "w")
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        # Ray's driver also prints the errors it learns of (a worker died, a task was
        # cancelled) with Python's print, to sys.stdout, from a thread: drop those; each one
        # is in the summary already.
        from ray._private import worker
        self.worker, self.printer = worker, worker.print_to_stdstream
        worker.print_to_stdstream = lambda data, *a, **k: (
            None if data.get("pid") == "raylet" else self.printer(data, *a, **k))

    def close(self) -> None:
        self.worker.print_to_stdstream = self.printer
        os.dup2(self.saved, 2)
        os.close(self.saved)
        if self.progress.stream is not self.stream:
            self.progress.stream.close()
            self.progress.stream = self.stream


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None


def _ray_failed(job: Job, error: Exception) -> Result:
    text = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(error).split()))[:300]
    return Result(job.model, job.output, internal=True,
                  error=f"{job.model}: internal error: Ray could not run this model: {text}")


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
