"""Stand-in batch workers for tests: module-level, so spawned worker processes can import them."""

import os
import signal
import time

from compiler.batch import Job, Result


def crash_on_crash(job: Job) -> Result:
    """Kill the worker process outright for a model named ``crash*``; succeed for the others."""
    if os.path.basename(job.model).startswith("crash"):
        os._exit(9)
    return Result(job.model, job.output, params=(10, 5), flops=(20, 10), difference=0.0)


def interrupt_parent_on_interrupt(job: Job) -> Result:
    """Ctrl-C the parent from the model named ``interrupt*`` (as a terminal would, but the
    parent alone); ``slow*`` takes 3 s, long enough to still run when it lands."""
    name = os.path.basename(job.model)
    if name.startswith("slow"):
        time.sleep(3)
    if name.startswith("interrupt"):
        os.kill(os.getppid(), signal.SIGINT)
        time.sleep(1)                       # busy while the parent handles it
    return Result(job.model, job.output, params=(10, 5), flops=(20, 10), difference=0.0)
