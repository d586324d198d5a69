"""One spec over many models: ``prunec apply SPEC MODEL... --out-dir DIR [--jobs N]``.

Each model is its own job: load, plan, emit, verify, write ``DIR/<stem>.keras`` atomically (with
``--export FORMAT``, its checked export beside it first: a model is written whole, export
included, or not at all), and return a ``Result`` row — the numbers, or the one-line error. A failing model never stops the
others and never leaves a partial file. The executors (``executors.py``: local processes or Ray)
run the jobs, retry a model whose worker died, and stop one that runs over its timeout.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .errors import CompilerError, InternalError, ModelError, internal_error_text
from .files import same_file
from .report import align_columns

__all__ = ["Job", "Result", "expand_models", "plan_jobs", "run_job",
           "format_summary", "Progress"]


@dataclass(frozen=True)
class Job:
    spec: str
    model: str
    output: str
    mode: str = "slice"
    check: bool = True
    trust: bool = False
    export: str | None = None       # a format of export.FORMATS, written beside ``output``
    data: str | None = None         # --data: for data criteria (else the spec's 'data:')
    batch_size: int | None = None


@dataclass(frozen=True)
class Result:
    """One row of the summary: the numbers when written, else ``error`` (one line)."""

    model: str
    output: str
    params: tuple[int, int] | None = None
    flops: tuple[int, int] | None = None
    difference: float | None = None     # verified max relative difference; None: not verified
    error: str | None = None
    internal: bool = False              # the error is a prunec bug (exit code 3)
    interrupted: bool = False           # Ctrl-C came before this model was written
    seconds: float | None = field(default=None, compare=False)   # time in its worker
    warnings: tuple[str, ...] = ()      # the plan's (coupling widened an explicit list)
    export: tuple[str, str, float | None] | None = None   # (format, path, checked difference)

    @property
    def ok(self) -> bool:
        return self.error is None


def expand_models(patterns: Iterable[str]) -> list[str]:
    """Model paths from arguments that may be globs (quoted, or on a shell that does not expand
    them); each file once, in the order given, a glob's matches sorted."""
    paths: list[str] = []
    for pattern in patterns:
        if glob.has_magic(pattern) and not os.path.exists(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise ModelError("no model file matches this pattern", pattern,
                                 "check the pattern; quote it to let prunec expand it")
            paths += matches
        else:
            paths.append(pattern)
    seen: dict[str, str] = {}
    for path in paths:
        seen.setdefault(os.path.normpath(os.path.abspath(path)), path)
    return list(seen.values())


def plan_jobs(spec: str, models: list[str], out_dir: str, **options) -> list[Job]:
    """One job per model, writing ``out_dir/<stem>.keras`` (and its export beside it); two models
    with one stem are refused, and so is an output that is one of the inputs (the spec, or any
    model of the batch)."""
    if options.get("export"):
        from .export import beside      # imports Keras: only when exporting
    by_output: dict[str, str] = {}
    jobs = []
    for model in models:
        output = os.path.join(out_dir, Path(model).stem + ".keras")
        written = [output] + ([beside(output, options["export"])] if options.get("export") else [])
        for path in written:
            if path in by_output:
                raise ModelError(f"'{by_output[path]}' and '{model}' would both be written to "
                                 f"'{path}'", model, "give the models different file names, or "
                                 "run them with separate --out-dir")
            _refuse_inputs(path, model, spec, models)
            by_output[path] = model
        jobs.append(Job(spec, model, output, **options))
    return jobs



def _refuse_inputs(output: str, model: str, spec: str, models: list[str]) -> None:
    """Raise if ``output`` (``model``'s result) names the spec or a model of the batch."""
    hint = "choose an --out-dir other than the models' own directory"
    if same_file(Path(output), Path(model)):
        raise ModelError("refusing to overwrite the input model", model, hint)
    if same_file(Path(output), Path(spec)):
        raise ModelError(f"refusing to overwrite the spec: its output would be '{output}'", model,
                         "choose an --out-dir other than the spec's directory")
    for other in models:
        if same_file(Path(output), Path(other)):
            raise ModelError(f"refusing to overwrite the input model '{other}': this model's "
                             f"output would be '{output}'", model, hint)


def run_job(job: Job) -> Result:
    """Load, plan, emit, verify and write one model; every failure becomes the row's error."""
    from .runtime import import_keras_quietly
    import_keras_quietly()
    import keras

    from .api import apply
    from .modelio import load_model, save_model
    from .spec import load_spec
    protect = {"the input model": job.model, "the spec": job.spec}
    try:
        model = load_model(job.model, trust=job.trust)
        rebuilt, plan, difference = apply(load_spec(job.spec), model, mode=job.mode,
                                          check=job.check, data=job.data,
                                          batch_size=job.batch_size)
        exported = None
        try:
            exported = _export(rebuilt, job, protect) if job.export else None
            save_model(rebuilt, job.output, protect=protect)
        except BaseException:
            _remove(exported and exported[1])   # written whole, export included, or not at all
            raise
        return Result(job.model, job.output, plan.params, plan.flops, difference,
                      warnings=plan.warnings, export=exported)
    except CompilerError as error:   # name the model when the error points elsewhere
        text = str(error) if error.where == job.model else f"{job.model}: {error}"
        return Result(job.model, job.output, error=text,
                      internal=isinstance(error, InternalError))
    except Exception as error:  # a bug in prunec: this model fails, the others go on
        return Result(job.model, job.output, internal=True,
                      error=f"{job.model}: {internal_error_text(error)}")
    finally:
        keras.backend.clear_session()   # one process may run many models: free the last one


def _export(rebuilt, job: Job, protect: dict) -> tuple[str, str, float | None]:
    from .export import beside, export
    path = beside(job.output, job.export)
    return job.export, path, export(rebuilt, job.export, path, check=job.check, protect=protect)


def _remove(path: str | None) -> None:
    import shutil
    if path and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif path and os.path.exists(path):
        os.unlink(path)


def format_summary(results: list[Result], out_dir: str, export: str | None = None) -> str:
    """The table printed at the end: model, params and FLOPs before -> after, the export's check
    (with ``export``, a format), result."""
    exports = export is not None or any(r.export for r in results)
    rows = [("model", "params", "FLOPs") + (("export",) if exports else ()) + ("result",)]
    for r in results:
        checked_export = "-"
        if r.ok:
            params, flops = f"{r.params[0]} -> {r.params[1]}", f"{r.flops[0]} -> {r.flops[1]}"
            verdict = ("written, not verified" if r.difference is None else
                       f"written, verified (max relative difference {r.difference:.2g})")
            if r.export:
                fmt, _, checked = r.export
                checked_export = f"{fmt}, " + ("not verified" if checked is None else
                                               f"verified ({checked:.2g})")
        elif r.interrupted:
            params, flops, verdict = "-", "-", "interrupted, not written"
        else:
            params, flops, verdict = "-", "-", "FAILED: " + r.error.removeprefix(f"{r.model}: ")
        rows.append((r.model, params, flops) + ((checked_export,) if exports else ()) + (verdict,))
    lines = align_columns(rows)
    interrupted = sum(r.interrupted for r in results)
    failed = sum(not r.ok for r in results) - interrupted
    written = len(results) - failed - interrupted
    lines.append(f"{written} of {len(results)} models written to {out_dir}"
                 + (f"; {failed} failed" if failed else "")
                 + (f"; {interrupted} interrupted" if interrupted else ""))
    return "\n".join(lines) + "\n"


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal.

    Off a terminal (CI logs, pipes, tests) it prints nothing, so stderr holds error lines only.
    """

    def __init__(self, total: int, stream=None, enabled: bool | None = None, width: int = 24):
        self.stream = stream or sys.stderr
        self.total, self.width, self.finished, self.failed = total, width, 0, 0
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self.current = ""

    def line(self) -> str:
        filled = self.width * self.finished // max(self.total, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        failed = f", {self.failed} failed" if self.failed else ""
        elapsed = time.monotonic() - self.started
        return (f"[{bar}] {self.finished}/{self.total} models{failed}, {elapsed:.0f}s"
                + (f"  {self.current}" if self.current and self.finished < self.total else ""))

    def _draw(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K" + self.line())
            self.stream.flush()

    def start(self, model: str) -> None:
        self.current = model
        self._draw()

    def done(self, result: Result) -> None:
        self.finished += 1
        self.failed += not result.ok
        self._draw()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
