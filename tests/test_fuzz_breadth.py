"""The fuzzer's new blocks (ops.split, x[..., a:b], channel shuffle, Rescaling), each replayed on a
spec that must compile and one that must be refused, through the fuzzer's own judge."""

import keras
import pytest

from fuzz import oracle
from fuzz.blueprint import Blueprint, build

IMAGE = ((6, 6, 3),)
CASES = {
    "split_ok": (Blueprint(IMAGE, (("conv", 6, 1, "same", None, True), ("split", 2),
                                   ("conv", 4, 1, "same", "relu", True)), ("gap_dense", 2)),
                 {"layer": "c1", "remove": [0, 3]}, "ok"),
    "split_unequal": (Blueprint(IMAGE, (("conv", 6, 1, "same", None, True), ("split", 2),
                                        ("conv", 4, 1, "same", "relu", True)), ("gap_dense", 2)),
                      {"layer": "c1", "remove": [0, 1]}, "sections"),
    "split_criterion_ok": (Blueprint(IMAGE, (("conv", 6, 1, "same", None, True), ("split", 2),
                                             ("conv", 4, 1, "same", "relu", True)), ("gap_dense", 2)),
                           {"layer": "c1", "fraction": 0.5}, "ok"),   # 3 asked, 1 per section
    "slice_ok": (Blueprint(((9,),), (("dense", 8, "relu"), ("slice", 2, 6), ("dense", 3, None)),
                           ("dense", 2)),
                 {"layer": "d1", "remove": [0, 3]}, "ok"),
    "slice_emptied": (Blueprint(((9,),), (("dense", 8, "relu"), ("slice", 2, 6), ("dense", 3, None)),
                                ("dense", 2)),
                      {"layer": "d1", "remove": [2, 3, 4, 5]}, "sections"),
    "shuffle_ok": (Blueprint(IMAGE, (("conv", 6, 1, "same", None, True), ("shuffle", 2),
                                     ("conv", 4, 1, "same", None, True)), ("gap_dense", 2)),
                   {"layer": "c1", "remove": [1]}, "ok"),
    "raw_shuffle_ok": (Blueprint(IMAGE, (("conv", 6, 1, "same", None, True), ("shuffle", 2, True),
                                         ("conv", 4, 1, "same", None, True)), ("gap_dense", 2)),
                       {"layer": "c1", "remove": [1]}, "ok"),
    "rescaling_ok": (Blueprint(IMAGE, (("conv", 6, 1, "same", None, True), ("rescaling",),
                                       ("conv", 4, 1, "same", None, True)), ("gap_dense", 2)),
                     {"layer": "c1", "remove": [1, 5]}, "ok"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_new_fuzz_blocks(name, tmp_path):
    blueprint, rule, outcome = CASES[name]
    keras.backend.clear_session()
    built = build(blueprint)
    assert oracle.check(built, {"version": 1, "prune": [rule]}, tmp_path) == outcome
