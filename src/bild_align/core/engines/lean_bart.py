"""A lean BART / mBART / Marian / Pegasus decoder step over a static KV cache with one write
position per row.

    decoder = LeanBartDecoder(model, input_ids, attention_mask, capacity=1 + max_new_tokens + 12)
    logits = decoder.step(new_ids, starts)        # (rows, k, vocab), as `LeanT5Decoder.step`
    logits = decoder.step(new_ids, starts, rows)  # only the given rows of the batch

The same contract as `lean_t5.LeanT5Decoder`, for the encoder-decoder families that BiLD pairs
often come from (bart-large-cnn with a distilbart, opus-mt Marian translators, mBART-50,
pegasus-xsum with a distilled Pegasus). The four decoders differ only in where their layer
norms sit and how positions are embedded:

- BART: learned positions read at position + 2, a layer norm on the embeddings, each
  sub-layer's norm after its residual sum ("post-norm");
- mBART: BART's positions and embedding norm, norms before each sub-layer ("pre-norm") and
  one more at the end;
- Marian: fixed sinusoidal positions, no embedding norm, post-norm;
- Pegasus: Marian's positions, mBART's pre-norm with a final norm.

All four scale the token embeddings by `embed_scale` (sqrt(d_model) when the config says
`scale_embedding`) and add `final_logits_bias` to the logits. Weights are read in place.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers import PreTrainedModel

from bild_align.core.engines import Ids, Keep, Mask, Model, Rows, Starts
from bild_align.core.engines.lean_cache import CACHE_FULL, SourceAttention, StaticCache
from bild_align.core.engines.lean_ops import (
    causal_mask,
    encode,
    kept_positions,
    merge_heads,
    plain_weights,
    query_positions,
    split_heads,
)
from bild_align.core.engines.output_layer import output_logits
from bild_align.core.engines.shared_encoder import encoded_once

# model type -> (norms before each sub-layer, offset of the learned position table)
FAMILIES = {"bart": (False, 2), "mbart": (True, 2), "marian": (False, 0), "pegasus": (True, 0)}


def supports(model: PreTrainedModel) -> bool:
    """True for BART, mBART, Marian and Pegasus generation models with plain weights
    (`lean_ops.plain_weights`); others keep transformers' forward."""
    config = model.config
    inner = getattr(model, "model", None)
    return (
        getattr(config, "model_type", None) in FAMILIES
        and bool(getattr(config, "is_encoder_decoder", False))
        and hasattr(inner, "decoder")
        and hasattr(model, "final_logits_bias")
        and plain_weights(model)
    )


def _linear(module: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    return module.weight, module.bias


class _Layer:
    """One decoder layer's weights (references to the model's parameters)."""

    def __init__(self, layer) -> None:
        self.q, self.k, self.v, self.o = (
            _linear(getattr(layer.self_attn, name))
            for name in ("q_proj", "k_proj", "v_proj", "out_proj")
        )
        self.cross_q, self.cross_k, self.cross_v, self.cross_o = (
            _linear(getattr(layer.encoder_attn, name))
            for name in ("q_proj", "k_proj", "v_proj", "out_proj")
        )
        self.norm_self = layer.self_attn_layer_norm
        self.norm_cross = layer.encoder_attn_layer_norm
        self.norm_ff = layer.final_layer_norm
        self.fc1, self.fc2 = _linear(layer.fc1), _linear(layer.fc2)
        self.act = layer.activation_fn


def _layer_norm(hidden: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(hidden, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _embed_scale(decoder) -> float:
    """BART and mBART scale inside their embedding module, Marian and Pegasus in their
    decoder."""
    scale = getattr(decoder.embed_tokens, "embed_scale", None)
    if scale is None:
        scale = getattr(decoder, "embed_scale", 1.0)
    return float(scale)


class LeanBartDecoder:
    """The decoder of a BART-family model for one call: encoder output, cross-attention keys and
    values (computed once), and a static self-attention cache of `capacity` positions per row."""

    def __init__(self, model: Model, input_ids: Ids, attention_mask: Mask, capacity: int) -> None:
        config, decoder = model.config, model.model.decoder
        self.pre_norm, offset = FAMILIES[config.model_type]
        self.device = model.device
        self.layers = [_Layer(layer) for layer in decoder.layers]
        self.embed = decoder.embed_tokens.weight
        self.embed_scale = _embed_scale(decoder)
        self.positions = decoder.embed_positions.weight[offset:]
        self.embedding_norm = getattr(decoder, "layernorm_embedding", None)
        self.final_norm = getattr(decoder, "layer_norm", None) if self.pre_norm else None
        self.output_layer = model.lm_head
        self.logits_bias = model.final_logits_bias[0]
        self.heads = config.decoder_attention_heads
        self.head_dim = config.d_model // self.heads
        # the model embeds no position beyond its table: a call may ask for more room than it
        # will use (drafts past the end are never written), so the limit is enforced per step
        refusal = CACHE_FULL
        if capacity >= self.positions.shape[0]:
            capacity = self.positions.shape[0]
            refusal = (
                "this model embeds at most {capacity} decoder positions "
                "(max_position_embeddings); {extent} needed: lower max_new_tokens"
            )
        hidden, mask = encoded_once(
            model.model.encoder, input_ids, attention_mask,
            lambda: encode(model, input_ids, attention_mask),
        )  # fmt: skip
        rows = input_ids.shape[0]
        self.batch_size = rows
        projections = [(layer.cross_k, layer.cross_v) for layer in self.layers]
        source_mask = None if mask is None else (mask[:, None, None, :] > 0)
        self.source = SourceAttention(hidden, projections, self.heads, source_mask)
        self.cache = StaticCache(
            len(self.layers), rows, self.heads, capacity, self.head_dim, self.embed, refusal
        )

    def _sublayer(self, hidden: torch.Tensor, norm, compute) -> torch.Tensor:
        """A residual sub-layer with its norm before (mBART) or after (BART, Marian) the sum."""
        if self.pre_norm:
            return hidden + compute(_layer_norm(hidden, norm))
        return _layer_norm(hidden + compute(hidden), norm)

    def step(
        self, new_ids: Ids, starts: Starts, rows: Rows = None, keep: Keep = None
    ) -> torch.Tensor:
        """`Stepper.step`."""
        new_ids = new_ids.to(self.device)
        count, width = new_ids.shape
        place = self.cache.place(starts, width, rows, count)
        queries = query_positions(starts, width, self.device)
        # one query per row at one position sees every key up to it: no mask is needed
        single = isinstance(starts, int) and width == 1
        causal = None if single else causal_mask(queries, place.extent)
        hidden = F.embedding(new_ids, self.embed) * self.embed_scale
        hidden = hidden + self.positions[queries].to(hidden.dtype)
        if self.embedding_norm is not None:
            hidden = _layer_norm(hidden, self.embedding_norm)
        for index, layer in enumerate(self.layers):

            def attend_self(normed, index=index, layer=layer):
                query = split_heads(F.linear(normed, *layer.q), self.heads)
                key = F.linear(normed, *layer.k).view(count, width, self.heads, self.head_dim)
                value = F.linear(normed, *layer.v).view(count, width, self.heads, self.head_dim)
                attended = self.cache.attend(index, place, query, key, value, mask=causal)
                return F.linear(merge_heads(attended), *layer.o)

            def attend_source(normed, index=index, layer=layer):
                query = split_heads(F.linear(normed, *layer.cross_q), self.heads)
                return F.linear(merge_heads(self.source.attend(index, query, rows)), *layer.cross_o)

            def feed_forward(normed, layer=layer):
                return F.linear(layer.act(F.linear(normed, *layer.fc1)), *layer.fc2)

            hidden = self._sublayer(hidden, layer.norm_self, attend_self)
            hidden = self._sublayer(hidden, layer.norm_cross, attend_source)
            hidden = self._sublayer(hidden, layer.norm_ff, feed_forward)
        hidden = kept_positions(hidden, keep)
        if self.final_norm is not None:
            hidden = _layer_norm(hidden, self.final_norm)
        self.last_hidden = hidden  # what the output layer reads (a learned fallback reads it)
        return output_logits(hidden, self.output_layer) + self.logits_bias.to(hidden.dtype)
