"""The Ray executor of ``apply --out-dir``: a Ray task per model declaring its CPUs and memory
(``max_calls`` recycles workers); crashes are retried by the driver, timeouts are measured on one
clock actor and end in a forced cancel (compiler/executors.py states the guarantees both
executors give). It joins the cluster at ``address``, or starts a quiet local instance (no
dashboard, ``jobs`` CPUs) and shuts it down afterwards.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import time
from typing import Callable

from .batch import Job, Progress, Result, run_job
from .errors import CompilerError
from .executors import Options, prepare_keras, died, timed_out

__all__ = ["run_ray"]


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

    def running(self) -> list[int]:
        return list(self.started)

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
            prepare: Callable[[], None] | None = prepare_keras,
            results: dict[int, Result] | None = None) -> list[Result]:
    """Run each job as a Ray task (see the module's docstring), filling ``results``; results in
    the order of ``jobs``. On Ctrl-C nothing new is submitted, tasks whose model has not started
    are cancelled, the running ones finish and are recorded (with every model finished before),
    then KeyboardInterrupt is raised; a second Ctrl-C stops the running ones too."""
    ray = _import_ray()
    started_here = _start_ray(ray, options)
    refs: dict = {}
    results = {} if results is None else results
    quiet = _Quiet(progress)
    interrupt = _Interrupt()
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
        cancelled = False

        def finish(index: int, result: Result) -> None:
            ray.get(clock.forget.remote(index))
            results[index] = result
            progress.done(result)

        while refs or (queue and not interrupt.when):
            while queue and not interrupt.when and len(refs) < 2 * slots:   # a window
                index = queue.popleft()
                attempts[index] += 1
                progress.start(jobs[index].model)
                refs[task.remote(clock, index, jobs[index], run, prepare)] = index
            if interrupt.when and not cancelled:    # not started: never will be
                running, cancelled = set(ray.get(clock.running.remote())), True
                for ref, index in refs.items():
                    if index not in running:
                        ray.cancel(ref)
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.25)
            for ref in ready:
                index = refs.pop(ref)
                try:
                    finish(index, ray.get(ref))     # finished, even if cancelled too late
                except ray.exceptions.TaskCancelledError:
                    pass                            # Ctrl-C came first: interrupted
                except ray.exceptions.WorkerCrashedError:
                    if attempts[index] <= options.retries:
                        ray.get(clock.forget.remote(index))
                        queue.appendleft(index)     # after Ctrl-C: interrupted instead
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
        if interrupt.when:
            raise KeyboardInterrupt
        return [results[i] for i in range(len(jobs))]
    finally:
        interrupt.close()
        for ref in refs:      # a second Ctrl-C or an error here: stop what is still running
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
        quiet.close()


class _Interrupt:
    """SIGINT while Ray runs, as a flag (``when``) the driver's loop reads between waits, not an
    exception in the middle of a Ray call. A terminal's Ctrl-C reaches this process more than
    once (Ray's own processes share its process group), so SIGINTs within a second of the first
    are the same Ctrl-C; a later one raises KeyboardInterrupt: stop now."""

    def __init__(self):
        import signal
        import threading
        self.when: float | None = None
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self.when is None:
            self.when = now
        elif now - self.when > 1.0:
            raise KeyboardInterrupt

    def close(self) -> None:
        import signal
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


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
