"""The one check that a removal is exact, the one way tests write a spec, and what a refusal says.

``assert_prunes_exactly(model, rules, zero, shapes)`` applies ``rules`` to ``model`` and checks
everything a removal promises, each against something prunec did not compute:

* ``apply`` verified the rebuilt model (a difference, below 1e-4);
* the listed layers' output widths (``shapes``: path -> channels);
* the rebuilt model computes what ``reference.zeroed_reads_model(model, zero)`` computes (the
  original with the listed readers' input channels zeroed; built without prunec code) on random
  inputs;
* that reference differs from the original, so the check above can fail;
* the plan's params are Keras' counts: ``(model.count_params(), rebuilt.count_params())``.
"""

from __future__ import annotations

import pytest

import reference
from compiler.api import apply, build_graph, parse_spec, plan
from compiler.errors import ConstraintError

__all__ = ["assert_params_counted", "assert_prunes_exactly", "refusal", "spec_of"]


def spec_of(rules: str, path: str = "spec.yaml"):
    """The spec ``version: 1`` with ``rules`` (YAML list items, indented two spaces) under
    ``prune:``, as read from ``path``."""
    return parse_spec("version: 1\nprune:\n" + rules, path)


def assert_params_counted(resolved, model, rebuilt) -> None:
    """The plan's params before and after are what Keras counts on the two models."""
    assert resolved.params == (model.count_params(), rebuilt.count_params()), (
        f"plan says params {resolved.params}, Keras counts "
        f"{(model.count_params(), rebuilt.count_params())}")


def assert_prunes_exactly(model, rules, zero: dict, shapes: dict | None = None, x=None,
                          differs: float = 1e-6):
    """Apply ``rules`` (text for ``spec_of``, or a Spec) to ``model``; check the rebuilt model
    (see the module docstring) on ``x`` (default ``reference.random_inputs(model)``); the
    reference must differ from the original by more than ``differs`` (relative). Returns
    ``(rebuilt, plan)``."""
    spec = spec_of(rules) if isinstance(rules, str) else rules
    rebuilt, resolved, difference = apply(spec, model)
    assert difference is not None and difference < 1e-4, difference
    for path, expected in (shapes or {}).items():
        layer = reference.get_layer_by_path(rebuilt, path)
        assert tuple(layer.output.shape)[-1] == expected, path
    x = reference.random_inputs(model) if x is None else x
    oracle = reference.zeroed_reads_model(model, zero)
    reference.assert_outputs_close(oracle, rebuilt, x)
    # the removal matters: the original differs from the reference, so the check above can fail
    assert reference.relative_difference(model, oracle, x) > differs
    assert_params_counted(resolved, model, rebuilt)
    return rebuilt, resolved


def refusal(model, rules: str) -> str:
    """The one line of the ``ConstraintError`` that planning ``rules`` on ``model`` must raise."""
    with pytest.raises(ConstraintError) as caught:
        plan(build_graph(model), spec_of(rules))
    return str(caught.value)
