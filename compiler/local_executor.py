"""The local executor of ``apply --out-dir``: a pool of ``spawn``-ed worker processes
(TensorFlow is not fork-safe), each recycled after ``per_worker`` models, killed at its model's
timeout, replaced when it dies (compiler/executors.py states the guarantees both executors give).

The driver talks to each worker over a pipe: it sends ``(index, job)``, the worker answers
``("start", index)`` once Keras is imported and the model starts (the timeout's clock), then
``("done", index, result)``. Workers ignore SIGINT: on Ctrl-C the driver starts nothing new and
waits for the running models, which finish whole and are counted.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
from typing import Callable

from .batch import Job, Progress, Result, run_job
from .executors import Options, prepare_keras, died, timed_out

__all__ = ["run_local"]


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
              prepare: Callable[[], None] | None = prepare_keras,
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

    interrupt = _InterruptFlag()
    try:
        while len(results) < len(jobs):
            interrupt.check()
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
        interrupt.restore()
        for slot in slots:
            slot.stop()
    return [results[i] for i in range(len(jobs))]


class _InterruptFlag:
    """Ctrl-C as KeyboardInterrupt and as a flag the driver's loop checks: an interrupt raised
    inside a garbage-collection callback (JAX registers one) is swallowed by Python, and the
    batch would otherwise run on to the end."""

    def __init__(self):
        self.raised, self.previous = False, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        self.raised = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.raised:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
