"""keras-hub transformer blocks: attention heads and FFN neurons inside one composite layer.

A keras-hub block (``TransformerEncoder``, ``TransformerDecoder``, ``LlamaTransformerDecoder``,
``MistralTransformerDecoder``, ``GemmaDecoderBlock``, ``Qwen3TransformerDecoder``,
``Qwen3_5TransformerDecoder``; a ``ViTEncoder`` holds several) computes, on the residual stream
``x`` of width ``D``::

    a = x + sum_h A_h(x W_q[h], x W_k[g(h)]) x W_v[g(h)] W_o[h]        (norms before or after)
    y = a + f(a W_1) W_2                 or, gated:   a + (act(a W_1) * (a W_g)) W_2

with ``g(h) = h // (H_q / H_kv)`` under grouped-query attention (``H_kv < H_q``; else ``g(h) = h``).
Its attention sub-layers are ``EinsumDense``s; their equations name the head axis (the output's
``-2`` letter of query/key/value, the input's ``-2`` letter of the output projection), so the
head axis of every kernel and bias is read from the layer, never assumed.

Named blocks, each addressable by sub-layer path (``transformer_layer_3/self_attention``):

* ``heads`` of the attention sub-layer: removing query head ``h`` deletes ``W_q[:, h]`` (bias too)
  and ``W_o[h]`` -- exactly the original with head ``h``'s value projection zeroed (plain
  attention), since its attention output is then 0. Without grouping, key and value go too.
* ``kv_heads`` (grouped-query attention only): removing key/value head ``g`` deletes ``W_k[:, g]``,
  ``W_v[:, g]`` and its whole query group. Query heads removed with ``unit: heads`` must leave
  every group the same size (``H_q / H_kv`` must stay an integer ratio in order), else an error
  names the unequal group. Fewer heads keep their size: ``head_dim`` joins the block's config,
  and a class that derives its head size from ``hidden_dim / num_heads`` is rebuilt as prunec's
  head-sized version of it (``compiler.hub_blocks``, chosen by ``rebuilt_class``).
* ``outputs`` of the FFN's first Dense (its ``intermediate`` sub-layer): removing neuron ``j``
  deletes column ``W_1[:, j]`` (and the gate's ``W_g[:, j]``: one coupled channel) and row
  ``W_2[j]`` -- exactly the original with that producer column zeroed, as ``act(0) = 0`` for
  gelu, relu and silu, and with a gate ``act(.) * 0 = 0``.

The residual stream passes through LayerNorm/RMSNorm: removing a hidden channel is not exact,
so it is fixed ``approximate`` (``exact: false`` opts in). Masks and other inputs are not channels.

keras-hub is optional: without it this module registers nothing.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from math import prod

import numpy as np

from ..layout import OUTPUTS, Layout
from .base import Call, Kept, Rule, register, register_when_imported, weight_paths

__all__ = ["BlockShape", "HubBlockRule", "HubLayerRule", "SHAPES", "block_sublayer"]

HEADS, KV_HEADS = "heads", "kv_heads"


@dataclass(frozen=True)
class BlockShape:
    """Where a block class keeps its parts (sub-layer paths) and which config keys size them."""

    attention: str
    norms: tuple[str, ...]
    intermediate: str
    output: str
    gate: str | None = None
    heads_key: str = "num_heads"
    kv_key: str | None = None
    intermediate_key: str = "intermediate_dim"
    intermediate_scale: int = 1          # Gemma's config holds twice its gating width
    hidden_key: str | None = None        # Gemma's config holds the stream width
    blocks: str | None = None            # a stack (ViTEncoder): block name pattern ``{i}``
    final_norms: tuple[str, ...] = ()


_ENCODER = BlockShape("self_attention_layer", ("self_attention_layer_norm", "feedforward_layer_norm"),
                      "feedforward_intermediate_dense", "feedforward_output_dense")
_DECODER = BlockShape("self_attention", ("self_attention_layer_norm", "feedforward_layer_norm"),
                      "feedforward_intermediate_dense", "feedforward_output_dense")
_LLAMA = BlockShape("self_attention", ("self_attention_layernorm", "feedforward_layernorm"),
                    "feedforward_intermediate_dense", "feedforward_output_dense",
                    gate="feedforward_gate_dense", heads_key="num_query_heads",
                    kv_key="num_key_value_heads")
_QWEN3_5 = BlockShape("self_attention", ("input_layernorm", "post_attention_layernorm"),
                      "feedforward_intermediate_dense", "feedforward_output_dense",
                      gate="feedforward_gate_dense", heads_key="num_query_heads",
                      kv_key="num_key_value_heads")
_GEMMA = BlockShape("attention", ("pre_attention_norm", "pre_ffw_norm", "post_attention_norm",
                                  "post_ffw_norm"), "ffw_gating", "ffw_linear", gate="ffw_gating_2",
                    heads_key="num_query_heads", kv_key="num_key_value_heads",
                    intermediate_scale=2, hidden_key="hidden_dim")
_VIT = BlockShape("mha", ("ln_1", "ln_2"), "mlp/dense_1", "mlp/dense_2", heads_key="num_heads",
                  intermediate_key="mlp_dim", hidden_key="hidden_dim",
                  blocks="transformer_block_{i}", final_norms=("ln",))

#: keras-hub module path -> class name -> its shape (looked up along the MRO)
_CLASSES = {
    "keras_hub.src.layers.modeling.transformer_encoder": {"TransformerEncoder": _ENCODER},
    "keras_hub.src.layers.modeling.transformer_decoder": {"TransformerDecoder": _DECODER},
    "keras_hub.src.models.llama.llama_decoder": {"LlamaTransformerDecoder": _LLAMA},
    "keras_hub.src.models.mistral.mistral_transformer_decoder": {"MistralTransformerDecoder": _LLAMA},
    "keras_hub.src.models.qwen.qwen_decoder": {"QwenTransformerDecoder": _LLAMA},
    "keras_hub.src.models.qwen3.qwen3_decoder": {"Qwen3TransformerDecoder": _LLAMA},
    "keras_hub.src.models.qwen3_5.qwen3_5_decoder": {"Qwen3_5TransformerDecoder": _QWEN3_5},
    "keras_hub.src.models.gemma.gemma_decoder_block": {"GemmaDecoderBlock": _GEMMA},
    "keras_hub.src.models.vit.vit_layers": {"ViTEncoder": _VIT},
}
#: keras-hub layers whose channels prunec does not follow, but which it must rebuild beside the
#: blocks in a functional model (their own config does not round-trip)
_OTHERS = {"keras_hub.src.models.vit.vit_layers": ("ViTPatchingAndEmbedding",)}

SHAPES: dict[type, BlockShape] = {}
OTHERS: list[type] = []


def _load() -> None:
    import importlib

    try:
        importlib.import_module("keras_hub")
    except Exception:        # not installed (or broken): register nothing
        return
    for module_name in {**_CLASSES, **_OTHERS}:
        try:
            module = importlib.import_module(module_name)
        except Exception:
            continue
        for name, shape in _CLASSES.get(module_name, {}).items():
            if hasattr(module, name):
                SHAPES[getattr(module, name)] = shape
        OTHERS.extend(getattr(module, name) for name in _OTHERS.get(module_name, ())
                      if hasattr(module, name))


def block_sublayer(layer, path: str):
    """The sub-layer of ``layer`` at ``path`` (``self_attention/query``), or None."""
    for name in path.split("/"):
        if layer is None:
            return None
        layer = next((s for s in layer._flatten_layers(include_self=False, recursive=False)
                      if s.name == name), None)
    return layer


def shape_of(op) -> BlockShape | None:
    for cls in type(op).__mro__:
        if cls in SHAPES:
            return SHAPES[cls]
    return None


def block_prefixes(op, shape: BlockShape) -> list[str]:
    """``""`` for one block, ``"transformer_block_1/" ...`` for the blocks of a stack."""
    if shape.blocks is None:
        return [""]
    return [shape.blocks.format(i=i + 1) + "/" for i in range(op.num_layers)]


@dataclass(frozen=True)
class _Attention:
    """Head axes of one attention sub-layer, read from its EinsumDense equations."""

    heads: int
    kv_heads: int
    axes: dict = field(default_factory=dict)     # weight (under the attention) -> (head, hidden) axes

    @property
    def grouped(self) -> bool:
        return self.kv_heads < self.heads


def _attention(attention) -> _Attention | None:
    axes, sizes = {}, {}
    for name in ("query", "key", "value", "attention_output"):
        dense = block_sublayer(attention, name)
        equation = getattr(dense, "equation", None)
        if equation is None or "->" not in equation:
            return None
        source, rest = equation.split(",")
        kernel, output = rest.split("->")
        head, hidden = (source[-2], output[-1]) if name == "attention_output" else (output[-2], source[-1])
        if head not in kernel or hidden not in kernel:
            return None
        kernel_shape = tuple(dense.kernel.shape)
        sizes[name] = kernel_shape[kernel.index(head)]
        axes[f"{name}/kernel"] = (kernel.index(head), kernel.index(hidden))
        bias_axes = getattr(dense, "bias_axes", None) or ""
        if bias_axes:
            bias_spec = output[min(output.find(c) for c in bias_axes):]
            axes[f"{name}/bias"] = (bias_spec.index(head) if head in bias_axes else None,
                                    bias_spec.index(hidden) if hidden in bias_axes else None)
    if sizes["key"] != sizes["value"] or sizes["query"] != sizes["attention_output"] or \
            sizes["query"] % sizes["key"]:
        return None
    return _Attention(sizes["query"], sizes["key"], axes)


class HubBlockRule(Rule):
    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        shape = shape_of(call.op)
        ctx.fix(call, call.inputs[1:], "it is an attention mask or position input of the block, "
                "not channels")
        stream = call.inputs[0] if call.inputs else None
        if stream is not None:
            ctx.fix(call, [stream], "the residual stream passes through its normalization "
                    "(mean and variance across channels), so removal is not exact (a rule may "
                    "opt in with 'exact: false')", approximate=True)
        for prefix in block_prefixes(call.op, shape):
            attention_path = prefix + shape.attention
            attention = _attention(block_sublayer(call.op, attention_path))
            if attention is None:
                return ctx.stop(call, f"its attention '{attention_path}' has a form prunec does "
                                "not know (cross-attention or unknown projections)")
            heads = ctx.fresh(call, attention.heads, unit=HEADS, sublayer=attention_path)
            call.units[f"{attention_path}:{HEADS}"] = heads
            if attention.grouped:
                kv = ctx.fresh(call, attention.kv_heads, unit=KV_HEADS, sublayer=attention_path)
                call.units[f"{attention_path}:{KV_HEADS}"] = kv
            dense = block_sublayer(call.op, prefix + shape.intermediate)
            width = int(dense.kernel.shape[-1])
            neurons = ctx.fresh(call, width, sublayer=prefix + shape.intermediate)
            call.units[f"{prefix}{shape.intermediate}:{OUTPUTS}"] = neurons
            if shape.gate is not None:
                ctx.expose(call, neurons, prefix + shape.gate)
        if getattr(call.op, "_cross_attention_layer", None) is not None:
            return ctx.stop(call, "it has a cross-attention layer")
        return [stream] + [None] * (len(call.output_shapes) - 1)

    def weight_axes(self, call: Call) -> dict[str, dict[int, Layout]]:
        shape = shape_of(call.op)
        stream = call.inputs[0] if call.inputs else None
        paths = weight_paths(call.op)
        axes: dict[str, dict[int, Layout]] = {}

        def put(path, axis, layout):
            if layout is not None and axis is not None and path in paths:
                axes.setdefault(path, {})[axis] = layout

        for prefix in block_prefixes(call.op, shape):
            attention_path = prefix + shape.attention
            heads = call.units.get(f"{attention_path}:{HEADS}")
            if heads is None:
                return {}
            kv = call.units.get(f"{attention_path}:{KV_HEADS}", heads)
            attention = _attention(block_sublayer(call.op, attention_path))
            for weight, (head_axis, hidden_axis) in attention.axes.items():
                owner = heads if weight.startswith(("query/", "attention_output/")) else kv
                put(f"{attention_path}/{weight}", head_axis, owner)
                put(f"{attention_path}/{weight}", hidden_axis, stream)
            neurons = call.units[f"{prefix}{shape.intermediate}:{OUTPUTS}"]
            for name in filter(None, (shape.intermediate, shape.gate)):
                put(f"{prefix}{name}/kernel", 1, neurons)
                put(f"{prefix}{name}/kernel", 0, stream)
                put(f"{prefix}{name}/bias", 0, neurons)
            put(f"{prefix}{shape.output}/kernel", 0, neurons)
            put(f"{prefix}{shape.output}/kernel", 1, stream)
            put(f"{prefix}{shape.output}/bias", 0, stream)
            for norm in shape.norms:
                for path in paths:
                    if path.startswith(f"{prefix}{norm}/") and len(paths[path].shape) == 1:
                        put(path, 0, stream)
        for norm in shape.final_norms:
            for path in paths:
                if path.startswith(f"{norm}/") and len(paths[path].shape) == 1:
                    put(path, 0, stream)
        return axes

    def implied(self, call: Call, removed: np.ndarray):
        """Grouped-query attention: a removed key/value head takes its query group; query heads
        removed on their own must leave every group the same size."""
        shape = shape_of(call.op)
        extra = []
        for prefix in block_prefixes(call.op, shape):
            attention_path = prefix + shape.attention
            kv = call.units.get(f"{attention_path}:{KV_HEADS}")
            if kv is None:
                continue
            heads = call.units[f"{attention_path}:{HEADS}"]
            group = len(heads) // len(kv)
            gone_kv = removed[kv.ids]
            queries = removed[heads.ids].reshape(len(kv), group) | gone_kv[:, None]
            extra.append(heads.ids[queries.reshape(-1) & ~removed[heads.ids]])
            sizes = [(int(g), int((~queries[g]).sum())) for g in np.flatnonzero(~gone_kv)]
            counts = [size for _, size in sizes]
            if len(set(counts)) > 1:
                common = max(counts)           # name the first group that keeps fewer
                number, size = next((g, size) for g, size in sizes if size != common)
                return np.zeros(0, dtype=np.int64), (
                    f"removing these query heads of '{call.path}/{attention_path}' leaves "
                    f"key/value group {number} with {size} of its {group} query heads, other "
                    f"groups with {common}", "grouped-query attention needs every group the same "
                    "size: remove as many query heads from every group, or use 'unit: kv_heads'",
                    heads.ids)
        return (np.concatenate(extra) if extra else np.zeros(0, dtype=np.int64)), None

    def config_changes(self, call: Call, config: dict, kept: Kept) -> dict:
        from ..errors import ConstraintError

        shape = shape_of(call.op)
        found: dict[str, dict[str, int]] = {}
        for prefix in block_prefixes(call.op, shape):
            attention_path = prefix + shape.attention
            widths = {shape.heads_key: kept.units[f"{attention_path}:{HEADS}"],
                      shape.intermediate_key: kept.units[f"{prefix}{shape.intermediate}:{OUTPUTS}"]
                      * shape.intermediate_scale}
            if shape.kv_key is not None:
                widths[shape.kv_key] = kept.units.get(f"{attention_path}:{KV_HEADS}",
                                                      widths[shape.heads_key])
            if shape.hidden_key is not None and kept.inputs and kept.inputs[0] is not None:
                widths[shape.hidden_key] = kept.inputs[0]
            for key, value in widths.items():
                found.setdefault(key, {})[prefix.rstrip("/") or call.path] = value
        changes = {}
        original = {key: config.get(key) for key in found}
        heads_changed = any(value != original[key] for key, values in found.items()
                            for value in values.values() if key in (shape.heads_key, shape.kv_key))
        if heads_changed:
            changes.update(_head_dim(call, shape))
        for key, values in found.items():
            if len(set(values.values())) > 1:
                listed = ", ".join(f"{block}: {value}" for block, value in values.items())
                raise ConstraintError(
                    f"'{call.path}' ({type(call.op).__name__}) builds every block with one "
                    f"'{key}', but the plan keeps different ones ({listed})",
                    hint="give every block of it the same removal")
            changes[key] = next(iter(values.values()))
        return changes

    def layer_config(self, op) -> dict:
        from ..hub_blocks import repaired_config

        return repaired_config(op)

    def rebuilt_class(self, op, config: dict) -> type:
        """prunec's head-sized block (``compiler.hub_blocks``) when the plan gives the block a
        ``head_dim`` its class does not take, or its class's config does not round-trip."""
        from ..hub_blocks import rebuilt_class

        return rebuilt_class(op, config)

    def macs(self, call: Call, weight_shapes: dict[str, tuple]) -> int:
        """Every projection per position, plus the score and value products (``T^2`` per head,
        ``T`` being the sequence length when the model fixes it, else 1: per token)."""
        positions = call.input_shapes[0][1] if len(call.input_shapes[0]) > 2 else 1
        positions = int(positions) if positions is not None else 1
        total = positions * sum(prod(s) for p, s in weight_shapes.items()
                                if p.endswith("kernel") and len(s) > 1)
        shape = shape_of(call.op)
        for prefix in block_prefixes(call.op, shape):
            out = weight_shapes.get(f"{prefix}{shape.attention}/attention_output/kernel")
            query = weight_shapes.get(f"{prefix}{shape.attention}/query/kernel")
            if out is not None and query is not None:
                value_width = prod(out) // out[-1]                   # heads x value dim
                total += positions * positions * 2 * value_width
        return total


def _head_dim(call: Call, shape: BlockShape) -> dict:
    """``{"head_dim": d}`` that keeps the head size when heads go, or ConstraintError when the
    block class derives its head size from ``hidden_dim / num_heads`` and prunec has no
    head-sized version of it (``compiler.hub_blocks``)."""
    from ..errors import ConstraintError
    from ..hub_blocks import PRUNEC_BLOCKS

    parameters = inspect.signature(type(call.op).__init__).parameters
    attention_path = block_prefixes(call.op, shape)[0] + shape.attention
    output = block_sublayer(call.op, f"{attention_path}/attention_output")
    heads, head_dim = (int(d) for d in output.kernel.shape[:2]) if output is not None else (0, 0)
    if "head_dim" not in parameters and type(call.op) not in PRUNEC_BLOCKS:
        raise ConstraintError(
            f"'{call.path}' ({type(call.op).__name__}) sizes its heads as hidden width / "
            f"{shape.heads_key} ({head_dim} = {heads * head_dim} / {heads}), so it cannot be "
            "rebuilt with fewer heads of the same size",
            hint="prune its FFN neurons instead, or heads of a block class prunec rebuilds "
                 "with an explicit head size (TransformerEncoder, TransformerDecoder, Llama, "
                 "ViT, Gemma, Mistral, Qwen3)")
    return {"head_dim": head_dim}


class HubLayerRule(Rule):
    """A keras-hub layer (ViT's patch embedding) stops a removal, as a layer without a rule
    does, and is rebuilt from its repaired config (as prunec's class in a functional model)."""

    def propagate(self, call: Call, ctx) -> list[Layout | None]:
        return ctx.stop(call, f"prunec has no rule for {type(call.op).__name__}'s channels")

    layer_config = HubBlockRule.layer_config
    rebuilt_class = HubBlockRule.rebuilt_class


def _register() -> None:
    _load()
    if SHAPES:
        register(*SHAPES)(HubBlockRule)
    if OTHERS:
        register(*OTHERS)(HubLayerRule)


register_when_imported("keras_hub", _register)     # once a keras-hub model is in this process
