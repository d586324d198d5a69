"""Hypothesis strategies: random valid model blueprints, and random specs over a built model.

Models stay small (2-12 channels, 4-8 pixels a side, sequences of 2-6 steps, at most ~8 blocks)
so one example runs in a fraction of a second. Sequence models (``inputs=("sequence",)``) are mostly
attention, EinsumDense, FFN and LayerNormalization blocks; their specs also remove attention heads
(``unit: heads``), sometimes of a layer that has none. Specs are mostly valid and meant to compile, but a good share are meant to
be refused: indices out of range, every channel, channels reaching an output or an unknown layer,
conflicting rules, names that match nothing, negative or repeated indices.
"""

from __future__ import annotations

from math import prod

import yaml
from hypothesis import strategies as st

from .blueprint import HEADS, OUTPUTS, Blueprint, Built

__all__ = ["blueprints", "specs", "spec_text"]

_WIDTH = st.integers(2, 12)


def _one_in(draw, n: int) -> bool:
    """True about once in ``n`` draws (``integers(0, n - 1) == 0`` is far likelier: Hypothesis
    favours small values)."""
    return draw(st.sampled_from([False] * (n - 1) + [True]))


_SEQUENCE_KINDS = ["mha", "einsum", "ffn", "ln", "gap", "flatten", "input2", "spatial"]


@st.composite
def blueprints(draw, max_blocks: int = 7, inputs: tuple = ("image", "vector")) -> Blueprint:
    """A random model: an image, vector or sequence input (one of ``inputs``), then blocks valid
    for the current shape."""
    what = draw(st.sampled_from(inputs))
    if what == "image":
        side = draw(st.integers(4, 8))
        shape = (side, side, draw(st.integers(1, 4)))
    elif what == "sequence":
        shape = (draw(st.integers(2, 6)), draw(_WIDTH))
    else:
        shape = (draw(_WIDTH),)
    inputs = (shape,)
    blocks = []
    for _ in range(draw(st.integers(1, max_blocks))):
        image, sequence = len(shape) == 3, len(shape) == 2
        kinds = ["dense", "bn", "relu", "residual", "concat", "ops", "nested", "nested_shared",
                 "shared", "side", "stop"]
        kinds += ["merge", "prelu", "scale", "rescaling"]
        if shape[-1] >= 2:
            kinds.append("slice")
        if shape[-1] % 2 == 0 or shape[-1] % 3 == 0:
            kinds.append("split")
        if image and shape[-1] >= 4 and shape[-1] % 2 == 0:
            kinds.append("shuffle")
        if image:
            kinds += ["conv", "conv", "depthwise", "se", "gap", "flatten", "spatial", "grouped",
                      "separable", "transpose"]
        elif sequence:
            kinds += _SEQUENCE_KINDS
        else:
            kinds += ["dense", "input2", "einsum"]
        if image and shape[0] >= 2:
            kinds.append("pool")
        kind = draw(st.sampled_from(kinds))
        if sequence and draw(st.booleans()):                  # half of a sequence model: attention
            kind = draw(st.sampled_from(["mha", "mha", "mha", "einsum", "ffn", "ln"]))
        if kind == "dense" and image and not _one_in(draw, 4):  # Dense on images: rare
            kind = "conv"
        block, shape = _block(draw, kind, shape)
        blocks.append(block)
    head = draw(st.sampled_from(
        [("gap_dense", draw(st.integers(1, 4))), ("flatten_dense", draw(st.integers(1, 4))),
         ("none",)] if len(shape) == 3 else
        [("gap_dense", draw(st.integers(1, 4))), ("dense", draw(st.integers(1, 4))), ("none",)]
        if len(shape) == 2 else [("dense", draw(st.integers(1, 4))), ("none",)]))
    return Blueprint(inputs, tuple(blocks), head, draw(st.integers(0, 2**16)))


def _block(draw, kind: str, shape: tuple) -> tuple[tuple, tuple]:
    """One block's parameters, and the shape after it."""
    c = shape[-1]
    if kind == "dense":
        activation = draw(st.sampled_from([None, "relu", "relu", "tanh", "softmax"]))
        units = draw(_WIDTH)
        return ("dense", units, activation), shape[:-1] + (units,)
    if kind == "conv":
        kernel = draw(st.sampled_from([1, 3]))
        padding = "valid" if kernel == 3 and shape[0] >= 5 and draw(st.booleans()) else "same"
        filters = draw(_WIDTH)
        block = ("conv", filters, kernel, padding, draw(st.sampled_from([None, "relu"])),
                 draw(st.booleans()))
        side = shape[0] - 2 if padding == "valid" else shape[0]
        return block, (side, side, filters)
    if kind == "depthwise":
        m = draw(st.sampled_from([1, 1, 2]))
        return ("depthwise", m), shape[:-1] + (c * m,)
    if kind == "merge":
        how = draw(st.sampled_from(["add", "subtract", "maximum", "minimum", "average", "multiply"]))
        return ("merge", how, draw(st.booleans())), shape
    if kind == "prelu":
        return ("prelu", draw(st.booleans())), shape
    if kind == "scale":
        return ("scale",), shape
    if kind == "spatial" and len(shape) == 2:
        return ("spatial", "drop"), shape
    if kind == "spatial":
        how = draw(st.sampled_from(["up", "pad", "drop", "sdrop"] if shape[0] <= 5 else ["drop", "sdrop"]))
        side = shape[0] * 2 if how == "up" else shape[0] + 2 if how == "pad" else shape[0]
        return ("spatial", how), (side, side, c)
    if kind == "grouped":
        m = draw(st.sampled_from([1, 2]))
        return ("grouped", m), shape[:-1] + (c * m,)
    if kind == "separable":
        filters = draw(_WIDTH)
        return ("separable", filters, draw(st.sampled_from([1, 2]))), shape[:-1] + (filters,)
    if kind == "transpose":
        filters = draw(_WIDTH)
        return ("transpose", filters), shape[:-1] + (filters,)
    if kind == "bn":
        return ("bn", draw(st.booleans()), draw(st.booleans())), shape
    if kind in ("relu", "ops", "rescaling"):
        return (kind,), shape
    if kind == "split":
        n = draw(st.sampled_from([d for d in (2, 3) if c % d == 0]))
        return ("split", n), shape
    if kind == "slice":
        a = draw(st.integers(0, c - 1))
        b = draw(st.integers(a + 1, c))
        return ("slice", a, b), shape[:-1] + (b - a,)
    if kind == "shuffle":                        # layers, or raw ops
        return ("shuffle", 2, draw(st.booleans())), shape
    if kind == "pool":
        side = (shape[0] + 1) // 2
        return ("pool", draw(st.sampled_from(["max", "avg"]))), (side, side, c)
    if kind == "gap":
        return ("gap",), (c,)
    if kind == "mha":
        return _attention(draw, shape)
    if kind == "einsum":
        forms = ["cd", "cd", "dc", "bd"] if len(shape) == 2 else ["cd", "dc"]
        units = draw(_WIDTH)
        return (("einsum", draw(st.sampled_from(forms)), units, draw(st.booleans()),
                 draw(st.sampled_from([None, "relu"]))), shape[:-1] + (units,))
    if kind == "ffn":
        return ("ffn", draw(_WIDTH), draw(st.sampled_from(["gelu", "relu", "silu"])),
                draw(st.booleans())), shape
    if kind == "ln":
        return ("ln",), shape
    if kind == "flatten":
        return ("flatten",), (prod(shape),)
    if kind == "residual":
        return ("residual", draw(st.booleans()), draw(st.booleans())), shape
    if kind == "concat":
        width = draw(_WIDTH)
        return ("concat", width, draw(st.booleans())), shape[:-1] + (c + width,)
    if kind == "se":
        return ("se", draw(st.integers(1, max(1, c // 2)))), shape
    if kind == "nested":
        widths = tuple(draw(st.lists(_WIDTH, min_size=1, max_size=3)))
        return ("nested", widths, draw(st.booleans())), shape[:-1] + (widths[-1],)
    if kind == "nested_shared":
        widths = tuple(draw(st.lists(_WIDTH, min_size=1, max_size=2)))
        return ("nested_shared", draw(_WIDTH), widths), shape[:-1] + (widths[-1],)
    if kind == "shared":
        units = draw(_WIDTH)
        return ("shared", draw(_WIDTH), units), shape[:-1] + (units,)
    if kind == "side":
        return ("side", draw(st.booleans())), shape
    if kind == "stop":
        return ("stop", draw(st.sampled_from(["softmax", "opaque"]))), shape
    if kind == "input2":
        width = draw(st.integers(1, 6))
        return ("input2", width), (c + width + 1,)
    raise ValueError(kind)


def _attention(draw, shape: tuple) -> tuple[tuple, tuple]:
    source = draw(st.sampled_from(["self", "self", "branch", "input"]))
    source = ((source,) if source == "self" else (source, draw(_WIDTH)) if source == "branch"
              else (source, draw(st.integers(2, 6)), draw(st.integers(1, 6))))
    width = draw(st.sampled_from([None, None, None]) | _WIDTH)
    # head sizes (key_dim, value_dim) of at least 2: Keras' TensorFlow ops.add takes a (heads, 1)
    # bias for tf.nn.bias_add and adds it along the sequence axis when the sequence is as long as
    # there are heads (keras/src/backend/tensorflow/numpy.py, add), so a head of size 1 computes
    # the wrong thing in Keras itself whenever pruning makes heads == sequence length
    block = ("mha", draw(st.integers(1, 6)), draw(st.integers(2, 4)),
             draw(st.sampled_from([None, None]) | st.integers(2, 4)), width, source,
             draw(st.sampled_from([None, None, None]) | _WIDTH), _one_in(draw, 4), _one_in(draw, 4),
             _one_in(draw, 4), draw(st.sampled_from([0] * 8 + [1, 2])), draw(st.booleans()))
    return block, shape[:-1] + (width or shape[-1],)


_TYPES = ("Dense", "Conv2D", "BatchNormalization", "DepthwiseConv2D", "Add", "SeparableConv2D",
          "Conv2DTranspose", "Scale", "PReLU", "MultiHeadAttention", "EinsumDense")


@st.composite
def specs(draw, built: Built) -> dict:
    """A random spec (as a dict) over the layers of ``built``."""
    facts = built.facts
    paths = sorted(facts.calls) or ["nope"]
    producers = sorted(w for w in built.widths if ":" not in w)
    attentions = sorted(p for p, units in facts.units.items() if HEADS in units)
    fixed = facts.fixed_groups()
    free = [p for p in producers                    # producers with a channel that may go
            if any(r not in fixed for layout in facts.output_layouts(p) for r in layout)]
    rules = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3]))):
        rule: dict = {}
        how = draw(st.sampled_from(["free"] * 10 + ["producer"] * 3 + ["any"] * 2 + ["glob"] * 2
                                   + ["type"] * 2 + ["missing"]))
        if how == "free" and free:
            rule["layer"] = draw(st.sampled_from(free))
        elif how in ("free", "producer") and producers:
            rule["layer"] = draw(st.sampled_from(producers))
        elif how in ("free", "producer", "any"):
            rule["layer"] = draw(st.sampled_from(paths))
        elif how == "glob":
            target = draw(st.sampled_from(paths))
            rule["layer"] = draw(st.sampled_from(
                [target[:1] + "*", "*" + target[-1:], target.rsplit("/", 1)[0] + "/*", "*",
                 target[:-1] + "?"]))
        elif how == "type":
            present = sorted({facts.kinds[p][0] for p in facts.calls})   # the class names
            rule["type"] = draw(st.sampled_from(present + list(_TYPES[:2])))
        else:
            rule["layer"] = draw(st.sampled_from(["nope", "d99", "x*"]))
        if _one_in(draw, 5):
            rule["optional"] = True
        if _one_in(draw, 6):
            rule["exclude"] = [draw(st.sampled_from(paths + ["*/*", "c*"]))]
        if attentions and draw(st.booleans()):              # attention heads
            rule["unit"] = HEADS
            if how in ("free", "producer") and not _one_in(draw, 6):
                rule["layer"] = draw(st.sampled_from(attentions))
        unit = rule.get("unit", OUTPUTS)
        outputs = facts.layouts(rule["layer"], unit) if rule.get("layer") in facts.calls else []
        width = len(outputs[0]) if outputs else draw(_WIDTH)
        what = draw(st.sampled_from(["remove"] * 5 + ["keep"] * 2 + ["fraction"] * 2 + ["count"]))
        if what in ("remove", "keep"):
            top = width + (1 if _one_in(draw, 7) else -1)   # sometimes out of range
            most = width if what == "keep" else max(1, width - 1)
            indices = draw(st.lists(st.integers(0, max(0, top)), min_size=1, max_size=most,
                                    unique=True))
            if _one_in(draw, 31):                          # refused by the spec stage
                indices = indices + [draw(st.sampled_from([-1, indices[0]]))]
            if _one_in(draw, 13) and what == "remove":     # every channel
                indices = list(range(width))
            rule[what] = indices
        else:
            if what == "fraction":
                rule["fraction"] = draw(st.sampled_from([0.1, 0.25, 0.3, 0.5, 0.75, 0.9]))
            else:
                rule["count"] = draw(st.integers(1, width + 1))
            if draw(st.booleans()):
                rule["criterion"] = draw(st.sampled_from(["l1", "l2"]))
            if _one_in(draw, 5):
                rule["min_keep"] = draw(st.integers(1, 6))
            if _one_in(draw, 5):
                rule["round_to"] = draw(st.sampled_from([2, 4]))
        rules.append(rule)
    return {"version": 1, "prune": rules}


def spec_text(spec: dict) -> str:
    return yaml.safe_dump(spec, sort_keys=False, default_flow_style=None)
