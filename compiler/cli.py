"""The ``prunec`` command: parse arguments, dispatch to ``commands.py``, one line per error.

Exit codes mean one thing each: 0 success, 1 the input is wrong or cannot be satisfied (the
message says where and how to fix it), 2 the command line itself is wrong, 3 an internal error
(a prunec bug), 130 stopped by Ctrl-C (128 + SIGINT, as shells report it; a batch prints its
summary first). ``prunec diff`` follows diff(1) instead: 0 equal, 1 different, 2 trouble.
No traceback ever reaches the user.
"""

from __future__ import annotations

import argparse
import sys

from . import commands
from .commands import EXIT_ERROR, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE
from .errors import CompilerError, InternalError, internal_error_text, print_error

__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_INTERNAL"]

# Positionals that may also come after options (`apply SPEC -o DIR A.keras B.keras`), which
# argparse alone refuses: the command -> the argument that collects them.
_TRAILING = {"apply": "models", "plan": "model", "lock": "paths", "graph": "spec",
             "sensitivity": "model"}


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="prunec", description="Remove neurons, filters and "
                                     "channels from Keras 3 models, as a YAML spec says.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    trust = dict(action="store_true", help="load models that carry Python code (Lambda); only "
                 "for files you trust")
    locked = dict(nargs="?", const="", metavar="LOCK", help="remove exactly the channels locked "
                  "in LOCK (default SPEC.lock); refuse if the spec or model changed since")

    def data_options(command, required: bool = False):
        command.add_argument("--data", metavar="FILE.npz", required=required,
                             help="representative data: .npz with arrays named after the model's "
                             "inputs ('x' for one) and optional 'y', or .npy; overrides 'data:'")
        command.add_argument("--batch-size", type=int, default=None, metavar="N",
                             help="samples per batch when reading data (default 32)")

    validate = sub.add_parser("validate", help="check spec files (no model needed)")
    validate.add_argument("specs", nargs="+", metavar="SPEC")

    plan = sub.add_parser("plan", help="show what a spec removes, layer by layer")
    plan.add_argument("spec", metavar="SPEC")
    plan.add_argument("model", nargs="?", metavar="MODEL", help="overrides the spec's 'model:'")
    plan.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    plan.add_argument("-o", "--output", metavar="FILE", help="write the plan here, not to stdout")
    plan.add_argument("--locked", **locked)
    plan.add_argument("--trust-model-code", **trust)
    data_options(plan)

    apply = sub.add_parser("apply", help="write the rebuilt, smaller model(s)",
                           description="One model: -o OUT.keras. Several (globs welcome): "
                           "--out-dir DIR writes DIR/<model file name>.keras for each.")
    apply.add_argument("spec", metavar="SPEC")
    apply.add_argument("models", nargs="*", metavar="MODEL", help="overrides the spec's 'model:'")
    apply.add_argument("-o", "--output", metavar="OUT.keras", help="the rebuilt model (one MODEL)")
    apply.add_argument("--out-dir", metavar="DIR", help="write one rebuilt model per MODEL here")
    apply.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="with --out-dir: rebuild N models at a time, in separate processes")
    _batch_options(apply)
    apply.add_argument("--mode", choices=("slice", "mask"), default="slice",
                       help="slice: real smaller layers (default); mask: same shapes, zeroed channels")
    apply.add_argument("--no-verify", action="store_true", help="skip the check against the original")
    apply.add_argument("--locked", **locked)
    apply.add_argument("--trust-model-code", **trust)
    data_options(apply)
    apply.add_argument("--finetune", type=int, metavar="EPOCHS", help="after verification, train "
                       "the rebuilt model EPOCHS passes over --data (needs labels 'y'); settings "
                       "from the spec's 'finetune:'")
    apply.add_argument("--export", choices=("litert", "onnx", "saved_model"), metavar="FORMAT",
                       help="also export the rebuilt model (litert, onnx, saved_model) beside "
                       "each .keras output: OUT.tflite, OUT.onnx or OUT_saved_model/")

    export = sub.add_parser("export", help="export a .keras model to LiteRT, ONNX or SavedModel, "
                            "checked against the .keras model")
    export.add_argument("model", metavar="MODEL")
    export.add_argument("--format", required=True, choices=("litert", "onnx", "saved_model"))
    export.add_argument("-o", "--output", required=True, metavar="PATH")
    export.add_argument("--no-verify", action="store_true", help="skip running the exported model")
    export.add_argument("--trust-model-code", **trust)

    bench = sub.add_parser("bench", help="CPU latency (batch 1 and 32) and size on disk of a "
                           "model, or of a model and its pruned version")
    bench.add_argument("model", metavar="MODEL")
    bench.add_argument("pruned", nargs="?", metavar="PRUNED")
    bench.add_argument("--batches", default="1,32", metavar="N,N", help="batch sizes (default 1,32)")
    bench.add_argument("--repeats", type=_positive(int), default=30, metavar="N",
                       help="timed calls per model and batch (default 30); the median is shown")
    bench.add_argument("--warmup", type=int, default=5, metavar="N", help="untimed calls first (default 5)")
    bench.add_argument("--trust-model-code", **trust)

    lock = sub.add_parser("lock", help="write SPEC.lock: the exact channels, model and spec "
                          "fingerprints", usage="prunec lock SPEC [MODEL] [-o LOCK]\n"
                          "       prunec lock --check SPEC_OR_LOCK...")
    lock.add_argument("paths", nargs="+", metavar="SPEC [MODEL]", help="a spec and its model "
                      "(default: the spec's 'model:'); with --check, spec or lock files")
    lock.add_argument("-o", "--output", metavar="LOCK", help="default: SPEC.lock")
    lock.add_argument("--check", action="store_true", help="check that each lock (or the lock of "
                      "each spec) is current; write nothing")
    lock.add_argument("--trust-model-code", **trust)
    data_options(lock)

    diff = sub.add_parser("diff", help="what changed between two lock files or JSON plans "
                          "(exit 0 equal, 1 different, 2 trouble)")
    diff.add_argument("old", metavar="OLD")
    diff.add_argument("new", metavar="NEW")

    graph = sub.add_parser("graph", help="draw the dependency graph (coupled groups coloured)")
    graph.add_argument("model", metavar="MODEL")
    graph.add_argument("spec", nargs="?", metavar="SPEC", help="annotate what this spec removes")
    graph.add_argument("-o", "--output", required=True, metavar="FILE.{dot,svg,png,pdf}")
    graph.add_argument("--trust-model-code", **trust)

    evaluate = sub.add_parser("evaluate", help="loss, accuracy and compiled metrics on data")
    evaluate.add_argument("model", metavar="MODEL")
    data_options(evaluate, required=True)
    evaluate.add_argument("--loss", metavar="LOSS", help="a Keras loss identifier (default: the "
                          "model's compiled loss, else inferred from the labels)")
    evaluate.add_argument("--format", choices=("text", "json"), default="text")
    evaluate.add_argument("--trust-model-code", **trust)

    sensitivity = sub.add_parser("sensitivity", help="prune each selected layer alone at "
                                 "fractions 0.1..0.9 and measure what it costs")
    sensitivity.add_argument("spec", metavar="SPEC")
    sensitivity.add_argument("model", nargs="?", metavar="MODEL", help="overrides 'model:'")
    data_options(sensitivity)
    sensitivity.add_argument("-o", "--output", required=True, metavar="REPORT.json")
    sensitivity.add_argument("--plot", metavar="REPORT.png", help="one curve per layer (matplotlib)")
    sensitivity.add_argument("--suggest", metavar="flops=F", help="also write SPEC.suggested.yaml: "
                             "per-layer fractions meeting the budget with the least measured loss")
    sensitivity.add_argument("--suggest-output", metavar="SPEC.yaml")
    sensitivity.add_argument("--trust-model-code", **trust)

    schema = sub.add_parser("schema", help="print a JSON Schema (spec, plan or lock file)")
    schema.add_argument("name", nargs="?", choices=("spec", "plan", "lock"), default="spec")
    return parser, sub.choices


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
        return value
    return parse


def _size(text: str) -> int:
    from .executors import parse_size
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _batch_options(apply: argparse.ArgumentParser) -> None:
    """``apply --out-dir``'s executor options (compiler/executors.py)."""
    group = apply.add_argument_group("with --out-dir: where and how the models run")
    group.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: processes on this machine (default); ray: a Ray task per "
                       "model (pip install 'prunec[ray]')")
    group.add_argument("--address", metavar="ADDR", help="ray: join this cluster (default: "
                       "start a local Ray instance with --jobs CPUs)")
    group.add_argument("--timeout", type=_positive(float), metavar="SECONDS",
                       help="stop a model still running after this long; it fails, the others go on")
    group.add_argument("--retries", type=int, default=1, metavar="N", help="run a model again "
                       "up to N times when its worker dies (default 1; never for bad input)")
    group.add_argument("--models-per-worker", type=_positive(int), default=1, metavar="N",
                       help="replace each worker process after N models (default 1)")
    group.add_argument("--cpus-per-model", type=_positive(float), default=1.0, metavar="N",
                       help="ray: CPUs each model's task declares (default 1)")
    group.add_argument("--memory-per-model", type=_size, default=_size("2G"), metavar="SIZE",
                       help="ray: memory each model's task declares (default 2G)")
    group.add_argument("--summary", metavar="FILE.json", help="also write the summary as JSON")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse, then take trailing positionals and check what argparse cannot (SystemExit(2))."""
    parser, subparsers = _parser()
    args, extra = parser.parse_known_args(argv)
    command = subparsers[args.command]
    target = _TRAILING.get(args.command)
    if extra and target and not any(e.startswith("-") for e in extra):
        current = getattr(args, target)
        if isinstance(current, list):
            current.extend(extra)
            extra = []
        elif current is None and len(extra) == 1:
            setattr(args, target, extra.pop())
    if extra:
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "apply":
        several = len(args.models) > 1
        if args.output and args.out_dir:
            command.error("give -o OUT.keras (one model) or --out-dir DIR (several), not both")
        if not args.output and not args.out_dir:
            command.error("give -o OUT.keras (one model) or --out-dir DIR (several)")
        if several and args.output:
            command.error(f"{len(args.models)} models need --out-dir DIR, not -o")
        if args.out_dir and args.locked is not None:
            command.error("--locked applies one lock to one model: use -o OUT.keras")
        if args.finetune is not None and (args.finetune < 1 or args.out_dir):
            command.error("--finetune EPOCHS needs EPOCHS >= 1 and one model (-o)")
        if args.jobs < 1 or (args.jobs > 1 and not args.out_dir):
            command.error("--jobs N needs N >= 1, and --out-dir")
        batch_only = [name for name, given in (
            ("--executor", args.executor != "local"), ("--timeout", args.timeout is not None),
            ("--summary", args.summary), ("--models-per-worker", args.models_per_worker != 1),
            ("--retries", args.retries != 1)) if given]
        if batch_only and not args.out_dir:
            command.error(f"{batch_only[0]} needs --out-dir")
        if args.retries < 0:
            command.error("--retries N needs N >= 0")
        if args.executor != "ray" and (args.address or args.cpus_per_model != 1.0
                                       or args.memory_per_model != _size("2G")):
            command.error("--address, --cpus-per-model and --memory-per-model need "
                          "--executor ray")
    if getattr(args, "batch_size", None) is not None and args.batch_size < 1:
        command.error("--batch-size N needs N >= 1")
    if args.command == "lock" and not args.check and len(args.paths) > 2:
        command.error("give SPEC [MODEL], or --check with spec or lock files")
    if args.command == "lock" and args.check and args.output:
        command.error("--check writes nothing: leave out -o")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) and EXIT_USAGE
    failure = EXIT_USAGE if args.command == "diff" else EXIT_ERROR  # diff(1): 2 means trouble
    try:
        return getattr(commands, args.command)(args)
    except InternalError as error:   # a wrong model was built and refused: a bug, not input
        print_error(error)
        return EXIT_INTERNAL
    except CompilerError as error:
        print_error(error)
        return failure
    except KeyboardInterrupt:
        print("error: interrupted; no file was left half-written", file=sys.stderr)
        return commands.EXIT_INTERRUPTED
    except Exception as error:  # the last line of defence: never a traceback
        print(f"error: {internal_error_text(error)}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
