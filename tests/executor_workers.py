"""Stand-in model jobs for the executor tests: module-level, so worker processes (spawned, or
Ray's) import them by name. Each behaves by the model's file name."""

import os
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
