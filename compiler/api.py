"""The Python API, mirroring the CLI, for notebooks and scripts.

>>> spec = load_spec("specs/mnist_fc1.yaml")                  # doctest: +SKIP
>>> smaller, plan, difference = apply(spec, model)            # doctest: +SKIP
>>> print(format_plan(plan))                                  # doctest: +SKIP
"""

from __future__ import annotations

import keras

from .emit import emit
from .graph import ModelGraph, build_graph
from .modelio import load_model, save_model
from .plan import Plan, plan
from .report import format_plan, plan_to_dict
from .spec import Spec, load_spec, parse_spec
from .verify import verify
from .custom import register_rule  # noqa: F401  the custom-layer API, docs/custom-layers.md

__all__ = ["load_spec", "parse_spec", "build_graph", "plan", "emit", "verify", "apply",
           "format_plan", "plan_to_dict", "load_model", "save_model", "ModelGraph", "Plan", "Spec"]


def apply(spec: Spec, model: keras.Model, mode: str = "slice",
          check: bool = True) -> tuple[keras.Model, Plan, float | None]:
    """Plan ``spec`` on ``model``, rebuild it, and (unless ``check=False``) verify the law.

    Returns the rebuilt model, the plan, and the verified relative difference (None when not
    checked, or when the plan holds approximate groups, which the law does not cover).
    """
    resolved = plan(build_graph(model), spec)
    rebuilt = emit(model, resolved, mode=mode)
    difference = None
    if check and not resolved.approximate:
        difference = verify(model, rebuilt, resolved, mode=mode)
    return rebuilt, resolved, difference
