"""Every failure the differential fuzzer found, replayed exactly (blueprint, spec, route).

Each case names the bug and the fix. The blueprints are the ``repr`` the fuzzer printed; the
judge is the same ``fuzz.oracle.check`` the fuzzer uses (outcome predicted from the fuzzer's own
facts, rebuilt model compared with ``reference.zeroed_reads_model``).
"""

import keras
import pytest

from fuzz import oracle
from fuzz.blueprint import Blueprint, build

CASES = {
    # Bug 1 (emit): channels removed *before* a nested Sequential: the nested model was cloned
    # with its original input shape, so rebuilding failed ("could not rebuild the model", a
    # refusal that should have been a model). Fix: emit rebuilds nested models on their new inputs.
    "nested_after_removal": (
        Blueprint(inputs=((12,),), blocks=(("dense", 5, None), ("residual", False, False),
                                           ("nested", (12, 11), False), ("dense", 6, None),
                                           ("dense", 7, None), ("nested", (5,), False)),
                  head=("dense", 1), seed=4),
        {"version": 1, "prune": [{"layer": "d6", "remove": [0]}]}, 2),
    "nested_after_concat_removal": (
        Blueprint(inputs=((12,),), blocks=(("concat", 3, False), ("nested", (8,), False),
                                           ("dense", 9, "softmax"), ("dense", 5, "tanh"),
                                           ("bn", False, True)), head=("dense", 2), seed=494),
        {"version": 1, "prune": [{"layer": "d1", "remove": [0, 2]}]}, 5),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("route", ["api", "cli"])
def test_fuzz_regression(name, route, tmp_path):
    blueprint, spec, _ = CASES[name]
    keras.backend.clear_session()
    assert oracle.check(build(blueprint), spec, tmp_path, via_cli=route == "cli") == "ok"
