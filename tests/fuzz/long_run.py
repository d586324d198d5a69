"""A long fuzzing campaign, by hand: ``python -m tests.fuzz.long_run --examples 2000``.

Runs the same examples as ``tests/test_fuzz_compiler.py`` but does not stop at the first failure:
each failing (blueprint, spec) is printed with its error and the run goes on; at the end a table
counts the outcomes. ``--no-shrink`` skips Hypothesis' shrinking (faster triage).
``--inputs sequence`` draws only sequence models (attention, EinsumDense, FFN; the examples of
``test_fuzz_compiler.py``'s sequence test), ``--inputs image vector sequence`` all three.
``--spec-examples N`` runs the spec front-end fuzzers of ``tests/test_fuzz_spec.py`` N times each
instead (generated YAML, damaged specs, raw bytes).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))         # tests/: reference, fuzz

import keras  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fuzz import oracle, strategies  # noqa: E402
from fuzz.blueprint import build  # noqa: E402


def campaign(examples: int, seed: int | None, shrink: bool,
             inputs: tuple = ("image", "vector")) -> tuple[collections.Counter, list]:
    counts: collections.Counter = collections.Counter()
    failures: list = []
    specs_tried = [0]

    phases = [Phase.generate] + ([Phase.shrink] if shrink else [])

    @settings(max_examples=examples, deadline=None, database=None, phases=phases,
              suppress_health_check=list(HealthCheck))
    @given(blueprint=strategies.blueprints(inputs=inputs), data=st.data(), route=st.integers(0, 9))
    def one(blueprint, data, route):
        keras.backend.clear_session()
        built = build(blueprint)
        spec = data.draw(strategies.specs(built))
        specs_tried[0] += 1
        with tempfile.TemporaryDirectory() as tmp:
            try:
                kind = oracle.check(built, spec, Path(tmp), via_cli=route < 2,
                                    existing_output=route == 0, mask=route == 9)
            except Exception as error:  # noqa: BLE001 - recorded, the campaign goes on
                counts["FAILURE"] += 1
                failures.append((blueprint, spec, route, "".join(
                    traceback.format_exception_only(type(error), error)).strip()))
                print(f"FAILURE {len(failures)}: {blueprint!r}\n  spec: {spec}\n  route: {route}\n"
                      f"  {failures[-1][3]}", flush=True)
                return
        counts["cli" if route < 2 else "api"] += 1
        counts["mask" if route == 9 else "slice"] += 1
        counts["compiled" if kind == "ok" else "refused"] += 1
        counts[f"outcome {kind}"] += 1
        counts["layers"] += len(built.facts.calls)
        if kind == "ok" and any(rule.get("unit") == "heads" for rule in spec["prune"]):
            counts["compiled with unit: heads"] += 1
        if kind == "ok":
            for block in {b[0] for b in blueprint.blocks}:
                counts[f"compiled with {block}"] += 1

    if seed is not None:
        one = __import__("hypothesis").seed(seed)(one)
    one()
    return counts, failures


def spec_campaign(examples: int, seed: int | None) -> tuple[collections.Counter, list]:
    import test_fuzz_spec as spec_fuzz
    from fuzz import yaml_inputs

    counts: collections.Counter = collections.Counter()
    failures: list = []
    sources = {"generated YAML": yaml_inputs.documents().map(str.encode),
               "damaged specs": st.sampled_from(spec_fuzz.TEXTS).flatmap(yaml_inputs.mutations),
               "raw bytes": yaml_inputs.raw}
    for name, strategy in sources.items():
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def one(data):
            try:
                result = spec_fuzz.outcome(data)
            except Exception as error:  # noqa: BLE001 - recorded, the campaign goes on
                failures.append((name, data, f"{type(error).__name__}: {error}"))
                saved = Path(tempfile.gettempdir()) / f"prunec-spec-failure-{len(failures)}.yaml"
                saved.write_bytes(data)
                print(f"FAILURE {len(failures)} ({name}, saved as {saved}): {data[:200]!r}\n"
                      f"  {failures[-1][2]}")
                return
            counts[f"{name}: {'refused' if isinstance(result, list) else 'parsed'}"] += 1

        if seed is not None:
            one = __import__("hypothesis").seed(seed)(one)
        one()
    return counts, failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-shrink", action="store_true")
    parser.add_argument("--spec-examples", type=int, default=0)
    parser.add_argument("--inputs", nargs="+", choices=["image", "vector", "sequence"],
                        default=["image", "vector"])
    args = parser.parse_args(argv)
    start = time.time()
    if args.spec_examples:
        counts, failures = spec_campaign(args.spec_examples, args.seed)
        print(f"\n{sum(counts.values()) + len(failures)} spec inputs in {time.time() - start:.0f} s")
        for key in sorted(counts):
            print(f"  {key:32s} {counts[key]}")
        print(f"  failures                         {len(failures)}")
        return 1 if failures else 0
    counts, failures = campaign(args.examples, args.seed, not args.no_shrink, tuple(args.inputs))
    total = counts["compiled"] + counts["refused"] + counts["FAILURE"]
    print(f"\n{total} (model, spec) pairs in {time.time() - start:.0f} s "
          f"(seed {args.seed}), {counts['layers']} layers in all")
    for key in sorted(counts):
        if key != "layers":
            print(f"  {key:24s} {counts[key]}")
    print(f"  failures                 {len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
