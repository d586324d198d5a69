"""What each ``prunec`` command does, once ``cli.py`` has parsed its arguments.

One function per command, named after it, taking the parsed arguments and returning the exit
code; errors are raised (``cli.main`` prints them, one line each). The pipeline itself (load,
graph, plan, emit, verify) is written once, in ``api.py``: a command finds its inputs, calls the
API and reports. Keras is imported only by the commands that load a model, so ``prunec validate``
and ``prunec diff`` stay fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import ArtifactError, CompilerError, SpecError, print_error
from .spec import Spec, load_spec

__all__ = ["validate", "plan", "apply", "lock", "diff", "graph", "schema", "evaluate", "sensitivity",
           "export", "bench", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_INTERNAL",
           "EXIT_INTERRUPTED"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_INTERRUPTED = 130                    # 128 + SIGINT, as shells report Ctrl-C
_MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def _keras() -> None:
    """Import Keras quietly; call it before importing any module that imports Keras."""
    from .runtime import import_keras_quietly
    import_keras_quietly()


def _lock_path(spec: Spec, given: str | None) -> str:
    from .lock import default_lock_path
    path = given or default_lock_path(spec.path)
    if path.lower().endswith(_MODEL_SUFFIXES):
        raise CompilerError("this is a model file, not a lock file", path,
                            "--locked takes an optional LOCK: put it after MODEL, or write "
                            "--locked=LOCK")
    return path


def _model_path(spec: Spec, given: str | None, fallback: str | None = None) -> str:
    path = given or spec.model or fallback
    if not path:
        raise CompilerError("no model given", spec.path,
                            "pass MODEL on the command line or add 'model:' to the spec")
    if not given and path == spec.model and not os.path.lexists(path):
        raise CompilerError(f"the spec's model '{path}' does not exist", spec.locations.get(
            "model", spec.path), "'model:' is relative to the spec's directory; or pass MODEL on "
            "the command line")
    return path


def _protected(spec: Spec | None, model_path: str | None, lock_path: str | None = None) -> dict:
    """A command's input files, which no output may replace (``files.replacing``'s ``protect``)."""
    return {"the input model": model_path, "the spec": spec.path if spec else None,
            "the lock file": lock_path}


def _inputs(args, spec: Spec, model_arg: str | None):
    """The model path, and (``--locked``) the lock and its path; the lock's spec fingerprint is
    checked here, before any model loads."""
    if args.locked is None:
        return _model_path(spec, model_arg), None, None
    _keras()
    from .lock import check_lock, lock_model_path, read_lock
    lock_path = _lock_path(spec, args.locked)
    the_lock = read_lock(lock_path)
    check_lock(the_lock, lock_path, spec)
    return _model_path(spec, model_arg, lock_model_path(the_lock, lock_path)), the_lock, lock_path


def _resolve(args, spec: Spec, model_arg: str | None):
    """Load the model and plan it (``api.resolve``): by the spec, or (``--locked``) by its lock."""
    model_path, the_lock, lock_path = _inputs(args, spec, model_arg)
    _keras()
    from .api import resolve
    model, resolved = resolve(model_path, spec, the_lock, args.trust_model_code, lock_path,
                              **_data_args(args))
    if the_lock is None:
        _warn(resolved)
    return model, model_path, resolved, lock_path


def _warn(resolved) -> None:
    """Coupling widened an explicit list: say so on stderr, one line per spec rule."""
    for warning in resolved.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _data_args(args) -> dict:
    """``--data``/``--batch-size`` as API keywords (``--data`` overrides the spec's ``data:``)."""
    return {"data": getattr(args, "data", None), "batch_size": getattr(args, "batch_size", None)}


def validate(args) -> int:
    failed = False
    for path in args.specs:
        try:
            load_spec(path)
            print(f"{path}: ok")
        except SpecError as error:
            failed = True
            print_error(error)
    return EXIT_ERROR if failed else EXIT_OK


def schema(args) -> int:
    from .artifacts import artifact_schema_text
    sys.stdout.write(artifact_schema_text(args.name))
    return EXIT_OK


def plan(args) -> int:
    spec = load_spec(args.spec)
    _keras()
    _, model_path, resolved, lock_path = _resolve(args, spec, args.model)
    from .files import write_text
    from .report import format_plan
    text = format_plan(resolved, args.format)
    if args.output:
        write_text(args.output, text, protect=_protected(spec, model_path, lock_path))
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def apply(args) -> int:
    spec = load_spec(args.spec)   # a broken spec fails once, before any model
    if args.out_dir:
        return _apply_batch(args, spec)
    _keras()
    model, model_path, resolved, lock_path = _resolve(args, spec, args.models[0] if args.models else None)
    from .api import rebuild
    from .modelio import save_model
    rebuilt, resolved, difference = rebuild(model, resolved, mode=args.mode, check=not args.no_verify)
    if getattr(args, "finetune", None):
        from .evaluate import compile_config
        from .finetune import recompile
        config = compile_config(model, model_path)
        _finetune(args, spec, model, rebuilt, config)
        recompile(rebuilt, config)      # written compiled as the original was, not as trained
    save_model(rebuilt, args.output, protect=_protected(spec, model_path, lock_path))
    (p0, p1), (f0, f1) = resolved.params, resolved.flops
    checked = "not verified" if difference is None else f"verified, max relative difference {difference:.2g}"
    locked = f", exactly as locked in {lock_path}" if lock_path else ""
    if args.mode == "mask":   # shapes kept: the file has every parameter, some of them zero
        sizes = f"params {p0} ({p0 - p1} zeroed; {p1} once sliced), FLOPs {f0} ({f1} once sliced)"
    else:
        sizes = f"params {p0} -> {p1}, FLOPs {f0} -> {f1}"
    print(f"wrote {args.output}: {sizes} ({args.mode} mode, {checked}{locked})")
    if args.export:
        from .export import beside
        _export(rebuilt, args.export, beside(args.output, args.export), not args.no_verify,
                {"the input model": model_path, "the spec": spec.path})
    return EXIT_OK


def _export(model, fmt: str, out: str, check: bool, protect: dict) -> None:
    from .export import export as export_model
    difference = export_model(model, fmt, out, check=check, protect=protect)
    checked = "not verified" if difference is None else \
        f"verified against the .keras model, max relative difference {difference:.2g}"
    print(f"wrote {out}: {fmt} ({checked})")


def export(args) -> int:
    _keras()
    from .modelio import load_model
    model = load_model(args.model, trust=args.trust_model_code)
    _export(model, args.format, args.output, not args.no_verify, {"the input model": args.model})
    return EXIT_OK


def bench(args) -> int:
    try:
        batches = [int(b) for b in args.batches.split(",")]
        assert batches and all(b > 0 for b in batches)
    except (ValueError, AssertionError):
        raise CompilerError(f"--batches takes positive integers separated by commas, not "
                            f"'{args.batches}'", "--batches", "e.g. --batches 1,32") from None
    _keras()
    from .bench import benchmark, format_bench
    paths = [args.model] + ([args.pruned] if args.pruned else [])
    rows = benchmark(paths, batches, repeats=args.repeats, warmup=args.warmup,
                     trust=args.trust_model_code)
    sys.stdout.write(format_bench(rows, batches))
    return EXIT_OK


def _data(args, spec: Spec | None, why: str):
    from .data import DATA_HINT, DEFAULT_BATCH_SIZE, DataError, as_data
    source = getattr(args, "data", None) or (spec.data if spec is not None else None)
    if source is None:
        raise DataError(f"{why} needs data", spec.path if spec is not None else None, DATA_HINT)
    return as_data(source, args.batch_size or DEFAULT_BATCH_SIZE)


def _finetune(args, spec: Spec, model, rebuilt, config) -> None:
    """``apply --finetune EPOCHS``: train the verified model, report original/pruned/fine-tuned."""
    from .evaluate import evaluate as measure
    from .finetune import finetune
    data = _data(args, spec, f"--finetune {args.finetune}")
    data.check(model, need_y=True, why=" (--finetune trains on labels)")
    loss = (spec.finetune or {}).get("loss") or spec.loss
    before = measure(model, data, loss, config)
    pruned = measure(rebuilt, data, loss, config)
    finetune(rebuilt, data, args.finetune, spec.finetune, config, spec.loss)
    after = measure(rebuilt, data, loss, config)
    print(f"accuracy: original {before['accuracy']:.4f}, pruned {pruned['accuracy']:.4f}, "
          f"fine-tuned {after['accuracy']:.4f} (loss {before['loss']:.4f}, {pruned['loss']:.4f}, "
          f"{after['loss']:.4f}; {after['samples']} samples, {args.finetune} epoch"
          f"{'s' if args.finetune != 1 else ''})")


def evaluate(args) -> int:
    _keras()
    from .evaluate import compile_config, evaluate as measure, format_metrics
    from .modelio import load_model
    model = load_model(args.model, trust=args.trust_model_code)
    data = _data(args, None, "evaluate")
    result = measure(model, data, args.loss, compile_config(model, args.model))
    sys.stdout.write(format_metrics(result, args.format))
    return EXIT_OK


def sensitivity(args) -> int:
    spec = load_spec(args.spec)
    _keras()
    from .sensitivity import run_sensitivity
    return run_sensitivity(args, spec, _model_path(spec, args.model), _data(args, spec, "sensitivity"))


def _apply_batch(args, spec: Spec) -> int:
    from .batch import Progress, expand_models, format_summary, plan_jobs
    from .executors import Options, execute, summary_to_dict
    models = expand_models(args.models) if args.models else [_model_path(spec, None)]
    if args.export:         # a missing converter fails once, not once per model
        _keras()
        from .export import check_converter
        check_converter(args.export, args.out_dir)
    _check_batch_data(spec, args.data)
    jobs = plan_jobs(args.spec, models, args.out_dir, mode=args.mode, check=not args.no_verify,
                     trust=args.trust_model_code, export=args.export, data=args.data,
                     batch_size=args.batch_size)
    try:
        os.makedirs(args.out_dir, exist_ok=True)
    except OSError as error:
        raise CompilerError(f"cannot create the output directory: {error.strerror or error}",
                            args.out_dir) from None
    options = Options(executor=args.executor, jobs=args.jobs, timeout=args.timeout,
                      retries=args.retries, per_worker=args.models_per_worker,
                      address=args.address, cpus=args.cpus_per_model,
                      memory=args.memory_per_model)
    progress = Progress(len(jobs))
    try:
        results = execute(jobs, options, progress)
    finally:
        progress.close()
    for result in results:
        for warning in result.warnings:
            print(f"warning: {result.model}: {warning}", file=sys.stderr)
        if not result.ok and not result.interrupted:
            print(f"error: {result.error}", file=sys.stderr)
    sys.stdout.write(format_summary(results, args.out_dir, args.export))
    if args.summary:
        import json
        from .files import write_text
        write_text(args.summary, json.dumps(summary_to_dict(results, args.out_dir, options),
                                            indent=2) + "\n",
                   protect={"the spec": spec.path, **{f"input model {m}": m for m in models}})
    stopped = sum(result.interrupted for result in results)
    if stopped:
        print(f"error: interrupted; {stopped} of {len(results)} models not written (the summary "
              "lists those that were); no file was left half-written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if any(result.internal for result in results):
        return EXIT_INTERNAL
    return EXIT_OK if all(result.ok for result in results) else EXIT_ERROR


def _check_batch_data(spec: Spec, data: str | None) -> None:
    """Data the batch's models all need, checked once rather than failing every model: the
    file exists, and a spec ranking by a data criterion has some."""
    from .data import DATA_CRITERIA, DATA_HINT, DataError, check_file
    source = data or spec.data
    if source is not None:
        check_file(source)
        return
    for rule in spec.rules:
        if rule.criterion in DATA_CRITERIA:
            raise DataError(f"{rule.label()}: criterion '{rule.criterion}' needs data",
                            rule.location("criterion"), DATA_HINT)


def lock(args) -> int:
    if args.check:
        return _check_locks(args.paths, args.trust_model_code, _data_args(args))
    spec = load_spec(args.paths[0])       # a broken spec fails before TensorFlow is imported
    model_path = _model_path(spec, args.paths[1] if len(args.paths) > 1 else None)
    _keras()
    from .api import resolve
    from .files import write_text
    from .lock import default_lock_path, format_lock, make_lock
    from .report import format_delta

    out = args.output or default_lock_path(spec.path)
    model, resolved = resolve(model_path, spec, trust=args.trust_model_code, **_data_args(args))
    _warn(resolved)
    the_lock = make_lock(spec, model, resolved, model_path, out, args.data or spec.data)
    text = format_lock(the_lock)
    if Path(out).is_file() and Path(out).read_bytes() == text.encode("utf-8"):
        print(f"{out}: up to date")
        return EXIT_OK
    write_text(out, text, protect=_protected(spec, model_path))
    groups = f"{len(the_lock.groups)} group{'s' if len(the_lock.groups) != 1 else ''}"
    print(f"wrote {out}: {groups}, params {format_delta(*the_lock.params)}, "
          f"FLOPs {format_delta(*the_lock.flops)}")
    return EXIT_OK


def _check_locks(paths: list[str], trust: bool, data_args: dict) -> int:
    """``lock --check``: each path is a lock (checked against the spec it records) or a spec
    (its ``SPEC.lock`` is checked, if there is one)."""
    _keras()
    from .lock import default_lock_path
    failed, seen = False, set()
    for path in paths:
        lock_path, spec_path = (path, None) if path.endswith(".lock") else \
            (default_lock_path(path), path)
        if lock_path in seen:
            continue
        seen.add(lock_path)
        try:
            if spec_path is not None and not os.path.exists(lock_path):
                load_spec(spec_path)
                print(f"{spec_path}: not locked, skipped")
                continue
            _check_lock_file(lock_path, spec_path, trust, data_args)
            print(f"{lock_path}: up to date")
        except CompilerError as error:
            failed = True
            print_error(error)
    return EXIT_ERROR if failed else EXIT_OK


def _check_lock_file(lock_path: str, spec_path: str | None, trust: bool, data_args: dict) -> None:
    """Raise unless the lock is what ``prunec lock`` would write now (paths aside); a lock
    ranked on data is re-ranked on ``--data``, else on the data file it records."""
    from .lock import (check_lock, lock_data_path, lock_model_path, lock_spec_path, lock_to_dict,
                       read_lock)
    the_lock = read_lock(lock_path)
    spec_path = spec_path or lock_spec_path(the_lock, lock_path)
    if not os.path.exists(spec_path):
        raise ArtifactError(f"its spec '{spec_path}' does not exist", lock_path,
                            "delete the lock, or restore the spec (the lock's 'spec.file' is "
                            "relative to the lock's directory)")
    spec = load_spec(spec_path)
    check_lock(the_lock, lock_path, spec)
    model_path = _model_path(spec, None, lock_model_path(the_lock, lock_path))
    if the_lock.data and data_args["data"] is None:
        data_args = dict(data_args, data=lock_data_path(the_lock, lock_path) or spec.data)
        if data_args["data"] is None:
            raise ArtifactError(f"its channels were ranked on data (sha256 "
                                f"{the_lock.data['sha256'][:16]}...) given in memory", lock_path,
                                "pass that data with --data FILE.npz")
    _keras()
    from .api import lock as make_lock
    from .modelio import load_model
    model = load_model(model_path, trust=trust)
    check_lock(the_lock, lock_path, spec, model, model_path)
    fresh = make_lock(spec, model, lock_path, **data_args)
    mine, theirs = lock_to_dict(fresh), lock_to_dict(the_lock)
    for data in (mine, theirs):
        data["spec"].pop("file"), data["model"].pop("file")
        data.get("data", {}).pop("file", None)
    if mine.get("data") != theirs.get("data"):
        raise ArtifactError(f"the data '{data_args['data']}' is not the data its channels were "
                            f"ranked on (sha256 {theirs.get('data', {}).get('sha256', 'none')[:16]}"
                            "...)", lock_path,
                            f"pass the locked data with --data, or run 'prunec lock {spec_path}' "
                            "on the new data and review the change with 'prunec diff'")
    if mine != theirs:
        raise ArtifactError("the lock is not what the spec resolves to on its model now (was it "
                            "edited by hand, or written by another prunec version?)", lock_path,
                            f"run 'prunec lock {spec_path}' and review the change with "
                            "'prunec diff'")


def diff(args) -> int:
    from .diff import diff_files
    difference = diff_files(args.old, args.new)
    sys.stdout.write(difference.text())
    return EXIT_OK if difference.equal else EXIT_ERROR


def graph(args) -> int:
    from .draw import renderer
    renderer(args.output)            # unknown format, missing Graphviz: fail before loading
    spec = load_spec(args.spec) if args.spec else None
    _keras()
    from .api import drawing
    _, model_graph, resolved = drawing(args.model, spec, args.output, args.trust_model_code)
    what = "coupled sets" if resolved is None else \
        f"{len(resolved.groups)} removed group{'' if len(resolved.groups) == 1 else 's'}"
    print(f"wrote {args.output}: {model_graph.graph.number_of_nodes()} nodes, {what} coloured")
    return EXIT_OK
