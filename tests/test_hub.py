"""keras-hub backbones: verification feeds them what they take, and (below) their blocks prune.

Every backbone is built from config at a tiny size with random weights (no preset is downloaded).
"""

import keras
import numpy as np
import pytest

from clirun import run
from compiler.errors import internal_error_text
from compiler.verify import random_inputs

keras_hub = pytest.importorskip("keras_hub")


def bert(**overrides):
    keras.utils.set_random_seed(0)
    config = dict(vocabulary_size=50, num_layers=2, num_heads=4, hidden_dim=32,
                  intermediate_dim=64, max_sequence_length=16)
    config.update(overrides)
    return keras_hub.models.BertBackbone(**config)


def test_random_inputs_follow_a_dict_model_and_its_vocabulary():
    feed = random_inputs(bert(), batch=2)
    assert sorted(feed) == ["padding_mask", "segment_ids", "token_ids"]
    assert feed["token_ids"].shape == (2, 16)            # capped by max_sequence_length
    assert feed["token_ids"].max() < 50 and feed["token_ids"].max() > 2
    assert feed["segment_ids"].max() < 2
    assert (feed["padding_mask"] == 1).all()


def test_apply_on_a_bert_backbone_that_prunes_nothing_succeeds(tmp_path, capsys):
    bert().save(tmp_path / "bert.keras")
    (tmp_path / "s.yaml").write_text("version: 1\nprune:\n  - layer: nothing\n    remove: [0]\n"
                                     "    optional: true\n")
    code, out, err = run(capsys, "apply", tmp_path / "s.yaml", tmp_path / "bert.keras",
                         "-o", tmp_path / "out.keras")
    assert (code, err) == (0, "")
    assert "verified" in out


def test_error_text_has_no_terminal_colour_codes():
    text = internal_error_text(ValueError("\x1b[1mThe structure\x1b[0m doesn't match"))
    assert "\x1b" not in text and "[1m" not in text and "The structure doesn't match" in text
