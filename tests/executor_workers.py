"""Stand-in model jobs for the executor tests: module-level, so worker processes (spawned, or
Ray's) import them by name. Each behaves by the model's file name."""

import os
import signal
import time

from compiler.batch import Job, Result


def by_name(job: Job) -> Result:
    """``crash*``: the worker dies; ``once*``: it dies the first time only (a marker file beside
    the output remembers); ``slow*``: runs for a minute; ``bad*``: a bad input (an error row);
    anything else succeeds. ``difference`` carries the worker's process id."""
    name = os.path.basename(job.model)
    if name.startswith("crash"):
        os._exit(9)
    if name.startswith("once"):
        marker = job.output + ".crashed"
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(9)
    if name.startswith("slow"):
        time.sleep(60)
    if name.startswith("bad"):
        return Result(job.model, job.output, error=f"{job.model}: cannot load model: bad")
    return Result(job.model, job.output, params=(10, 5), flops=(20, 10),
                  difference=float(os.getpid()))


def interrupts_the_driver(job: Job) -> Result:
    """Writes ``job.output`` as a real job would. ``slow*`` takes 3 s; ``interrupt*`` waits
    until ``a``'s output exists, then Ctrl-Cs the driver (whose pid is in ``driver.pid`` beside
    the outputs) twice at once, as a terminal's Ctrl-C reaches a Ray driver, and takes 2 s more."""
    name = os.path.basename(job.model)
    folder = os.path.dirname(job.output)
    if name.startswith("slow"):
        time.sleep(3)
    if name.startswith("interrupt"):
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(folder, "a.keras")) and time.monotonic() < deadline:
            time.sleep(0.1)
        with open(os.path.join(folder, "driver.pid")) as file:
            driver = int(file.read())
        os.kill(driver, signal.SIGINT)
        os.kill(driver, signal.SIGINT)
        time.sleep(2)
    with open(job.output, "w") as file:
        file.write("written")
    return Result(job.model, job.output, params=(10, 5), flops=(20, 10), difference=0.0)
