"""prunec's keras-hub blocks: keras-hub's own, with an explicit head size and a config that
round-trips. Import this module before loading a model that holds them::

    import compiler.hub_blocks        # registers the classes below with Keras ("prunec>...")
    model = keras.saving.load_model("pruned.keras")

Why: keras-hub's ``TransformerEncoder`` (Bert, DistilBert, Roberta), ``TransformerDecoder``
(GPT2), ``LlamaTransformerDecoder`` and ``ViTEncoder`` size each attention head as
``hidden_dim // num_heads``, so their configs cannot say "3 heads of 8 on a width of 32". Each
class here is the keras-hub class plus one config entry, ``head_dim`` (None: keras-hub's own
size), and a ``get_config`` that rebuilds it (``LlamaTransformerDecoder.get_config`` reads an
attribute it does not have; ``Qwen3TransformerDecoder``'s omits ``head_dim``).

How, with as little of keras-hub's code repeated as possible:

* ``TransformerEncoder``/``TransformerDecoder``/``LlamaTransformerDecoder`` run their own
  ``build``; when it assigns its attention sub-layer (created, not yet built), ``__setattr__``
  puts in its place the same attention configured with ``head_dim``, which the build then builds.
  Sub-layer names, weight paths, ``call``, masks and caches stay keras-hub's.
* ``LlamaAttention`` and ``ViTEncoder`` compute the head size inside their own ``build``, so
  ``PrunecLlamaAttention.build`` and ``PrunecViTEncoder.build`` are keras-hub's, repeated with
  ``head_dim`` (the tests build every class and compare it with keras-hub's).
"""

from __future__ import annotations

import inspect
import math

import keras
from keras_hub.src.layers.modeling.transformer_decoder import TransformerDecoder
from keras_hub.src.layers.modeling.transformer_encoder import TransformerEncoder
from keras_hub.src.models.llama.llama_attention import LlamaAttention
from keras_hub.src.models.llama.llama_decoder import LlamaTransformerDecoder
from keras_hub.src.models.llama.llama_rotary_embedding import LlamaRotaryEmbedding
from keras_hub.src.models.qwen3.qwen3_decoder import Qwen3TransformerDecoder
from keras_hub.src.models.vit.vit_layers import (ViTEncoder, ViTEncoderBlock,
                                                 ViTPatchingAndEmbedding)

__all__ = ["PRUNEC_BLOCKS", "PrunecLlamaAttention", "PrunecLlamaTransformerDecoder",
           "PrunecQwen3TransformerDecoder", "PrunecTransformerDecoder", "PrunecTransformerEncoder",
           "PrunecViTEncoder", "PrunecViTEncoderBlock", "PrunecViTPatchingAndEmbedding",
           "rebuilt_class", "repaired_config", "round_trips"]

_register = keras.saving.register_keras_serializable(package="prunec")


def repaired_config(layer, own=None) -> dict:
    """``layer.get_config()`` (or ``own()``: a subclass's ``super().get_config``), repaired where
    a keras-hub block's own is incomplete: every constructor argument it lacks is read from the
    layer's attribute of that name, and keys no constructor in its class takes are dropped
    (``LlamaTransformerDecoder.get_config`` reads a missing ``rope_scaling_factor``;
    ``Qwen3TransformerDecoder``'s omits ``head_dim``)."""
    try:
        config = (own or layer.get_config)()
    except AttributeError:
        config = {"name": layer.name, "trainable": layer.trainable,
                  "dtype": keras.dtype_policies.serialize(layer.dtype_policy)}
    named = set()
    for cls in type(layer).__mro__:          # a subclass's own arguments, and its bases'
        if cls in (keras.layers.Layer, object):
            break
        if "__init__" in vars(cls):
            parameters = inspect.signature(cls.__init__).parameters.values()
            named |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                               p.KEYWORD_ONLY)}
    for name in named - {"self"} - set(config):
        if hasattr(layer, name):
            value = getattr(layer, name)
            if callable(value) and not isinstance(value, type):     # activations, initializers
                value = keras.activations.serialize(value) if name == "activation" else \
                    keras.saving.serialize_keras_object(value)
            config[name] = value
    base = {"name", "trainable", "dtype"}
    return {k: v for k, v in config.items() if k in named or k in base}


class _RoundTrip:
    """``get_config`` with every constructor argument and nothing else: ``from_config`` works."""

    def get_config(self):
        return repaired_config(self, super().get_config)


class _HeadSized(_RoundTrip):
    """A block with ``head_dim``; its attention, named in ``_attentions``, is resized as the
    block's own build assigns it."""

    _attentions: tuple[str, ...] = ()

    def __init__(self, *args, head_dim=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_dim = head_dim

    def __setattr__(self, name, value):
        if name in self._attentions and getattr(self, "head_dim", None) and value is not None \
                and not value.built:
            value = self._resized(value)
        super().__setattr__(name, value)

    def _resized(self, attention):
        """A ``MultiHeadAttention`` like ``attention``, with heads of ``head_dim``."""
        config = attention.get_config()
        config.update(key_dim=self.head_dim, value_dim=self.head_dim)
        return type(attention).from_config(config)


@_register
class PrunecTransformerEncoder(_HeadSized, TransformerEncoder):
    _attentions = ("_self_attention_layer",)


@_register
class PrunecTransformerDecoder(_HeadSized, TransformerDecoder):
    _attentions = ("_self_attention_layer", "_cross_attention_layer")


@_register
class PrunecLlamaAttention(_RoundTrip, LlamaAttention):
    """``LlamaAttention`` with ``head_dim``: its build, with that head size."""

    def __init__(self, *args, head_dim=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_dim = head_dim

    def build(self, inputs_shape):
        if self.head_dim is None:
            return super().build(inputs_shape)
        hidden_dim, head_dim = inputs_shape[-1], self.head_dim
        heads, kv_heads = self.num_query_heads, self.num_key_value_heads
        self._inv_norm_factor = 1.0 / math.sqrt(head_dim)

        def einsum(equation, output_shape, name, input_shape):
            dense = keras.layers.EinsumDense(equation=equation, output_shape=output_shape,
                                             kernel_initializer=self.kernel_initializer,
                                             dtype=self.dtype_policy, name=name)
            dense.build(input_shape)
            return dense

        self._query_dense = einsum("bqm,muh->bquh", (None, heads, head_dim), "query", inputs_shape)
        self._key_dense = einsum("bkm,mvh->bkvh", (None, kv_heads, head_dim), "key", inputs_shape)
        self._value_dense = einsum("bkm,mvh->bkvh", (None, kv_heads, head_dim), "value",
                                   inputs_shape)
        self._softmax = keras.layers.Softmax(axis=-1, dtype="float32", name="attention_softmax")
        self._dropout_layer = keras.layers.Dropout(rate=self.dropout, dtype=self.dtype_policy)
        self._output_dense = einsum("bquh,uhm->bqm", (None, hidden_dim), "attention_output",
                                    (None, None, heads, head_dim))
        self.rotary_embedding_layer = LlamaRotaryEmbedding(
            max_wavelength=self.rope_max_wavelength,
            position_scaling_factor=self.rope_position_scaling_factor,
            frequency_adjustment_factor=self.rope_frequency_adjustment_factor,
            low_freq_factor=self.rope_low_freq_factor,
            high_freq_factor=self.rope_high_freq_factor,
            pretraining_sequence_length=self.rope_pretraining_sequence_length,
            dtype=self.dtype_policy)
        self._dot_product_equation = "bquh,bkuh->buqk"
        self._combine_equation = "buqk,bkuh->bquh"
        self.built = True


@_register
class PrunecLlamaTransformerDecoder(_HeadSized, LlamaTransformerDecoder):
    _attentions = ("_self_attention_layer",)

    def _resized(self, attention):
        return PrunecLlamaAttention(**repaired_config(attention), head_dim=self.head_dim)


@_register
class PrunecQwen3TransformerDecoder(_RoundTrip, Qwen3TransformerDecoder):
    """Qwen3's block takes ``head_dim`` already; its ``get_config`` leaves it out."""


@_register
class PrunecViTEncoderBlock(_RoundTrip, ViTEncoderBlock):
    """``ViTEncoderBlock`` builds its attention with its ``key_dim`` attribute: here a config
    entry (its own ``get_config`` writes it, its constructor refuses it)."""

    def __init__(self, *args, key_dim=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_dim = key_dim or self.key_dim


@_register
class PrunecViTEncoder(_RoundTrip, ViTEncoder):
    """``ViTEncoder`` with ``head_dim``: its build, with blocks of that head size."""

    def __init__(self, *args, head_dim=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_dim = head_dim

    def build(self, input_shape):
        if self.head_dim is None:
            return super().build(input_shape)
        self.encoder_layers = []
        for i in range(self.num_layers):
            block = PrunecViTEncoderBlock(
                num_heads=self.num_heads, hidden_dim=self.hidden_dim, mlp_dim=self.mlp_dim,
                key_dim=self.head_dim, dropout_rate=self.dropout_rate,
                use_mha_bias=self.use_mha_bias, use_mlp_bias=self.use_mlp_bias,
                attention_dropout=self.attention_dropout,
                layer_norm_epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy,
                name=f"transformer_block_{i + 1}")
            block.build((None, None, self.hidden_dim))
            self.encoder_layers.append(block)
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy,
                                            name="dropout")
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="ln")
        self.layer_norm.build((None, None, self.hidden_dim))
        self.built = True


@_register
class PrunecViTPatchingAndEmbedding(_RoundTrip, ViTPatchingAndEmbedding):
    """ViT's patch embedding; its own ``get_config`` writes two keys its constructor refuses."""


#: keras-hub class -> prunec's (exact classes: a subclass may compute differently)
PRUNEC_BLOCKS: dict[type, type] = {
    TransformerEncoder: PrunecTransformerEncoder,
    TransformerDecoder: PrunecTransformerDecoder,
    LlamaTransformerDecoder: PrunecLlamaTransformerDecoder,
    Qwen3TransformerDecoder: PrunecQwen3TransformerDecoder,
    ViTEncoder: PrunecViTEncoder,
    ViTPatchingAndEmbedding: PrunecViTPatchingAndEmbedding,
}


def rebuilt_class(layer, config: dict) -> type:
    """The class that rebuilds ``layer`` from ``config`` (its config with a plan's changes) in a
    functional model: its own, unless its own takes no ``head_dim`` the config has, or its own
    config does not round-trip (the saved model could not be loaded); then prunec's."""
    own = type(layer)
    prunec = PRUNEC_BLOCKS.get(own)
    if prunec is None:
        return own
    if config.get("head_dim") is not None and \
            "head_dim" not in inspect.signature(own.__init__).parameters:
        return prunec
    return own if round_trips(layer) else prunec


def round_trips(layer) -> bool:
    """Whether ``layer.get_config()`` rebuilds the layer (Llama's and Qwen3's blocks do not)."""
    try:
        type(layer).from_config(layer.get_config())
    except Exception:
        return False
    return True
