"""Differential fuzzing of the compiler: random (model, spec) pairs against the independent oracle.

Every pair either compiles to a model that removed exactly what the spec says and satisfies the
correctness law against ``reference.zeroed_reads_model``, or is refused with one located line and
nothing written (see ``fuzz/oracle.py``). A fifth of the examples go through ``prunec apply`` with
files, some over an existing output file; a few use mask mode. CI runs ``PRUNEC_FUZZ_EXAMPLES``
examples (default 150) of image and vector models, and ``PRUNEC_FUZZ_SEQUENCE_EXAMPLES`` (default
60) of sequence models (attention heads, EinsumDense, FFN pairs); ``python -m tests.fuzz.long_run
--examples N [--inputs sequence]`` runs a long campaign.
"""

import os
import tempfile
from pathlib import Path

import keras
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fuzz import oracle, strategies
from fuzz.blueprint import build

EXAMPLES = int(os.environ.get("PRUNEC_FUZZ_EXAMPLES", "150"))
SEQUENCE_EXAMPLES = int(os.environ.get("PRUNEC_FUZZ_SEQUENCE_EXAMPLES", "60"))


def run_example(blueprint, data, route: int) -> str:
    keras.backend.clear_session()
    built = build(blueprint)
    spec = data.draw(strategies.specs(built), label="spec")
    with tempfile.TemporaryDirectory() as tmp:
        return oracle.check(built, spec, Path(tmp), via_cli=route < 2, existing_output=route == 0,
                            mask=route == 9)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(blueprint=strategies.blueprints(), data=st.data(), route=st.integers(0, 9))
def test_every_model_and_spec_compiles_exactly_or_is_refused_cleanly(blueprint, data, route):
    event(run_example(blueprint, data, route))


@settings(max_examples=SEQUENCE_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(blueprint=strategies.blueprints(inputs=("sequence",)), data=st.data(),
       route=st.integers(0, 9))
def test_every_sequence_model_and_spec_compiles_exactly_or_is_refused_cleanly(blueprint, data, route):
    event(run_example(blueprint, data, route))
