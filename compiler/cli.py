"""The ``prunec`` command: parse arguments, run the stages, print one line per error.

Exit codes mean one thing each: 0 success, 1 the input is wrong or cannot be satisfied (the
message says where and how to fix it), 2 the command line itself is wrong, 3 an internal error
(a prunec bug). Only this module prints; no traceback ever reaches the user.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import CompilerError, SpecError

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def _quiet_tensorflow() -> None:
    """Import Keras with TensorFlow's start-up chatter (oneDNN, absl) kept off the user's stderr.

    Errors stay one line: TensorFlow prints those banners from C++ straight to file descriptor 2
    while it is imported, so that descriptor points at /dev/null for the import only.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "keras" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunec", description="Remove neurons, filters and "
                                     "channels from Keras 3 models, as a YAML spec says.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check spec files (no model needed)")
    validate.add_argument("specs", nargs="+", metavar="SPEC")

    def model_args(sub):
        sub.add_argument("spec", metavar="SPEC")
        sub.add_argument("model", nargs="?", metavar="MODEL", help="overrides the spec's 'model:'")
        sub.add_argument("--trust-model-code", action="store_true",
                         help="load models that carry Python code (Lambda); only for files you trust")

    plan = commands.add_parser("plan", help="show what a spec removes, layer by layer")
    model_args(plan)
    plan.add_argument("--format", choices=("text", "markdown", "json"), default="text")

    apply = commands.add_parser("apply", help="write the rebuilt, smaller model")
    model_args(apply)
    apply.add_argument("-o", "--output", required=True, metavar="OUT.keras")
    apply.add_argument("--mode", choices=("slice", "mask"), default="slice",
                       help="slice: real smaller layers (default); mask: same shapes, zeroed channels")
    apply.add_argument("--no-verify", action="store_true", help="skip the check against the original")

    commands.add_parser("schema", help="print the spec's JSON Schema")
    return parser


def _model_path(spec, given: str | None) -> str:
    if given:
        return given
    if spec.model:
        return spec.model
    raise CompilerError("no model given", spec.path,
                        "pass MODEL on the command line or add 'model:' to the spec")


def _run(args) -> int:
    from .spec import load_spec, spec_schema_text

    if args.command == "schema":
        sys.stdout.write(spec_schema_text())
        return EXIT_OK
    if args.command == "validate":
        failed = False
        for path in args.specs:
            try:
                load_spec(path)
                print(f"{path}: ok")
            except SpecError as error:
                failed = True
                for each in error.all():
                    print(f"error: {each}", file=sys.stderr)
        return EXIT_ERROR if failed else EXIT_OK

    _quiet_tensorflow()
    spec = load_spec(args.spec)
    model_path = _model_path(spec, args.model)
    from . import api
    from .modelio import load_model, save_model
    from .report import format_plan

    model = load_model(model_path, trust=args.trust_model_code)
    if args.command == "plan":
        sys.stdout.write(format_plan(api.plan(api.build_graph(model), spec), args.format))
        return EXIT_OK
    rebuilt, plan, difference = api.apply(spec, model, mode=args.mode, check=not args.no_verify)
    save_model(rebuilt, args.output, protect=(model_path,))
    (p0, p1), (f0, f1) = plan.params, plan.flops
    checked = "not verified" if difference is None else f"verified, max relative difference {difference:.2g}"
    print(f"wrote {args.output}: params {p0} -> {p1}, FLOPs {f0} -> {f1} ({args.mode} mode, {checked})")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) and EXIT_USAGE
    try:
        return _run(args)
    except SpecError as error:
        for each in error.all():
            print(f"error: {each}", file=sys.stderr)
        return EXIT_ERROR
    except CompilerError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # the last line of defence: never a traceback
        text = " ".join(str(error).split())[:300]
        print(f"error: internal error: {type(error).__name__}: {text} (hint: this is a prunec bug; "
              "please report it with the spec and model)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
