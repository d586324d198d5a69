"""The fuzzer's new blocks (ops.split, x[..., a:b], channel shuffle, Rescaling; on sequences
MultiHeadAttention, EinsumDense, FFN pairs, LayerNormalization), each replayed on a spec that must
compile and one that must be refused, through the fuzzer's own judge."""

import keras
import pytest

from fuzz import oracle
from fuzz.blueprint import Blueprint, build

IMAGE = ((6, 6, 3),)
SEQUENCE = ((5, 8),)
# ("mha", heads, key_dim, value_dim, output_shape, source, key, mask, causal, gate, scores, residual)
SELF_ATTENTION = Blueprint(SEQUENCE, (("mha", 4, 3, None, None, ("self",), None, False, False, False,
                                      0, True),), ("gap_dense", 2))
CROSS_ATTENTION = Blueprint(SEQUENCE, (("dense", 6, None), ("mha", 3, 2, 4, 7, ("branch", 5), 4, True,
                                                             True, True, 0, False),
                                       ("dense", 3, None)), ("gap_dense", 2))
SCORES_OUT = Blueprint(SEQUENCE, (("mha", 2, 2, None, None, ("input", 3, 4), None, False, False, False,
                                   2, False),), ("dense", 2))
EINSUMS = Blueprint(SEQUENCE, (("einsum", "dc", 6, True, "relu"), ("einsum", "bd", 5, False, None),
                               ("dense", 3, None)), ("gap_dense", 2))
FFN = Blueprint(SEQUENCE, (("ln",), ("ffn", 10, "gelu", True), ("dense", 4, None)), ("gap_dense", 2))
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
    "heads_ok": (SELF_ATTENTION, {"layer": "mha1", "unit": "heads", "remove": [1, 2]}, "ok"),
    "heads_all": (SELF_ATTENTION, {"layer": "mha1", "unit": "heads", "remove": [0, 1, 2, 3]}, "all"),
    "heads_of_a_dense": (CROSS_ATTENTION, {"layer": "d1", "unit": "heads", "remove": [0]},
                         "no match"),
    "cross_ok": (CROSS_ATTENTION, [{"layer": "mha5", "unit": "heads", "keep": [1]},
                                   {"layer": "d1", "remove": [0, 5]}, {"layer": "d2", "remove": [3]},
                                   {"layer": "d3", "remove": [1]},
                                   {"layer": "mha5/attention_output", "remove": [2, 6]}], "ok"),
    "cross_by_criterion": (CROSS_ATTENTION, [{"type": "MultiHeadAttention", "unit": "heads",
                                              "count": 1}, {"layer": "d*", "fraction": 0.5}], "ok"),
    "mask_fixed": (CROSS_ATTENTION, {"layer": "mk4", "remove": [0]}, "fixed"),
    "scores_fix_heads": (SCORES_OUT, {"layer": "mha1", "unit": "heads", "remove": [0]}, "fixed"),
    "scores_keep_outputs": (SCORES_OUT, {"layer": "mha1", "remove": [0]}, "ok"),
    "einsum_ok": (EINSUMS, {"layer": "e2", "remove": [0, 4]}, "ok"),
    "einsum_summed_input": (EINSUMS, {"layer": "e1", "remove": [0]}, "fixed"),
    "ffn_ok": (FFN, {"layer": "d2", "fraction": 0.5}, "ok"),
    "layernorm_fixed": (FFN, {"layer": "d3", "remove": [0]}, "fixed"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_new_fuzz_blocks(name, tmp_path):
    blueprint, rule, outcome = CASES[name]
    keras.backend.clear_session()
    built = build(blueprint)
    rules = rule if isinstance(rule, list) else [rule]
    assert oracle.check(built, {"version": 1, "prune": rules}, tmp_path) == outcome
