"""Differential fuzzing of prunec: random models and specs (``strategies``), what the fuzzer knows
about each model (``blueprint``), the judge (``oracle``) and a long-run entry point (``long_run``)."""
