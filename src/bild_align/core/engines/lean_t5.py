"""A lean T5 decoder step over a static KV cache with one write position per row.

    decoder = LeanT5Decoder(model, input_ids, attention_mask, capacity=1 + max_new_tokens + 12)
    logits = decoder.step(new_ids, starts)        # (rows, k, vocab); row r's k tokens are written
                                                   # at positions starts[r] .. starts[r] + k - 1
    logits = decoder.step(new_ids, starts, rows)  # only the given rows of the batch

Why: transformers' generic layers (mask builders, cache classes, output dataclasses) cost 2-7x
the matrix products of a cached single-token step of a small model. This module runs the same
arithmetic with the models' own weights (read in place, never copied, so a model being trained
is always current) and little else. Used for T5, mT5 and T5 v1.1 (gated) decoders; `supports`
says whether a model qualifies, and every other architecture keeps transformers' own forward.

The cache is allocated once per call for the longest possible output. A row's tokens always
occupy positions 0 .. length-1 of its cache, so a rollback is only a smaller start for the next
write: nothing is copied or cropped, and whatever lies beyond a query's own position (a rolled
back draft, the padding of a shorter row in the same step) is masked out as the future.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F
from transformers import PreTrainedModel

from bild_align.core.engines import Ids, Keep, Mask, Model, Rows, Starts
from bild_align.core.engines.lean_cache import SourceAttention, StaticCache
from bild_align.core.engines.lean_ops import (
    kept_positions,
    merge_heads,
    plain_weights,
    query_positions,
    rms_norm,
    split_heads,
)
from bild_align.core.engines.output_layer import output_logits
from bild_align.core.engines.shared_encoder import encoded_once


def supports(model: PreTrainedModel) -> bool:
    """True for the T5 family with plain weights (`lean_ops.plain_weights`); quantized,
    training or split models keep transformers' forward."""
    config = model.config
    return (
        getattr(config, "model_type", None) in {"t5", "mt5"}
        and bool(getattr(config, "is_encoder_decoder", False))
        and hasattr(model, "decoder")
        and plain_weights(model)
    )


def _decoder_bucket(distance: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's unidirectional relative-position bucket of a key `distance` >= 0 tokens back:
    exact buckets for the nearest half, logarithmic ones up to `max_distance`."""
    max_exact = num_buckets // 2
    large = max_exact + (
        torch.log(distance.float().clamp(min=1) / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).to(torch.long)
    large = large.clamp(max=num_buckets - 1)
    return torch.where(distance < max_exact, distance, large)


def _encoder_bucket(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bidirectional bucket of a key `relative` = key - query away: half of the buckets
    for keys behind, half for keys ahead, each half laid out as the unidirectional ones."""
    half = num_buckets // 2
    ahead = (relative > 0).to(torch.long) * half
    return ahead + _decoder_bucket(relative.abs(), half, max_distance)


def encode_t5(
    model: PreTrainedModel, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The T5 encoder's output with the model's own weights and little else: transformers'
    encoder forward spends most of a short input's encoding time outside its matrix products
    (masks, hooks, output capturing), once per model per call."""
    encoder = model.encoder
    device = encoder.embed_tokens.weight.device
    input_ids = input_ids.to(device)
    mask = None if attention_mask is None else attention_mask.to(device)
    hidden = F.embedding(input_ids, encoder.embed_tokens.weight)
    length = input_ids.shape[1]
    first = encoder.block[0].layer[0].SelfAttention
    positions = torch.arange(length, device=device)
    buckets = _encoder_bucket(
        positions[None, :] - positions[:, None],
        first.relative_attention_num_buckets,
        first.relative_attention_max_distance,
    )
    bias = first.relative_attention_bias.weight[buckets].permute(2, 0, 1)[None].to(hidden.dtype)
    if mask is not None:
        minimum = torch.finfo(hidden.dtype).min
        bias = bias.masked_fill(mask[:, None, None, :] == 0, minimum)
    heads = first.n_heads
    for block in encoder.block:
        self_attention, feed_forward = block.layer
        q, k, v, o = _projections(self_attention.SelfAttention)
        normed = rms_norm(hidden, self_attention.layer_norm)
        attended = F.scaled_dot_product_attention(
            split_heads(normed @ q.T, heads),
            split_heads(normed @ k.T, heads),
            split_heads(normed @ v.T, heads),
            attn_mask=bias,
            scale=1.0,
        )
        hidden = _clamp_half(hidden + merge_heads(attended) @ o.T)
        dense = feed_forward.DenseReluDense
        normed = rms_norm(hidden, feed_forward.layer_norm)
        gated = hasattr(dense, "wi_0")
        inner = dense.act(normed @ (dense.wi_0 if gated else dense.wi).weight.T)
        if gated:
            inner = inner * (normed @ dense.wi_1.weight.T)
        hidden = _clamp_half(hidden + inner.to(dense.wo.weight.dtype) @ dense.wo.weight.T)
    return rms_norm(hidden, encoder.final_layer_norm), mask


def _projections(attention) -> tuple[torch.Tensor, ...]:
    """A T5Attention's query, key, value and output weights."""
    return tuple(getattr(attention, name).weight for name in ("q", "k", "v", "o"))


class _Layer:
    """One decoder block's weights (references to the model's parameters)."""

    def __init__(self, block) -> None:
        self_attention, cross_attention, feed_forward = block.layer
        self.norm_self = self_attention.layer_norm
        self.q, self.k, self.v, self.o = _projections(self_attention.SelfAttention)
        self.norm_cross = cross_attention.layer_norm
        self.cross_q, self.cross_k, self.cross_v, self.cross_o = _projections(
            cross_attention.EncDecAttention
        )
        dense = feed_forward.DenseReluDense
        self.norm_ff = feed_forward.layer_norm
        self.act = dense.act
        self.gated = hasattr(dense, "wi_0")
        self.wi = dense.wi_0.weight if self.gated else dense.wi.weight
        self.wi_gate = dense.wi_1.weight if self.gated else None
        self.wo = dense.wo.weight


def _clamp_half(hidden: torch.Tensor) -> torch.Tensor:
    """T5's float16 guard after every sub-layer (as transformers does it)."""
    if hidden.dtype != torch.float16:
        return hidden
    largest = torch.finfo(torch.float16).max
    limit = torch.where(torch.isinf(hidden).any(), largest - 1000, largest)
    return torch.clamp(hidden, min=-limit, max=limit)


class LeanT5Decoder:
    """The decoder of a T5-family model for one call: encoder output, cross-attention keys and
    values (computed once), and a static self-attention cache of `capacity` positions per row."""

    def __init__(self, model: Model, input_ids: Ids, attention_mask: Mask, capacity: int) -> None:
        config = model.config
        self.device = device = model.device
        self.layers = [_Layer(block) for block in model.decoder.block]
        self.embed = model.decoder.embed_tokens.weight
        self.final_norm = model.decoder.final_layer_norm
        self.output_layer = model.lm_head
        self.output_scale = (
            config.d_model**-0.5 if getattr(config, "scale_decoder_outputs", False) else None
        )
        self.heads, self.head_dim = config.num_heads, config.d_kv
        self.dtype = self.embed.dtype
        self.mask_value = torch.finfo(self.dtype).min
        hidden, mask = encoded_once(
            model.encoder, input_ids, attention_mask,
            lambda: encode_t5(model, input_ids, attention_mask),
        )  # fmt: skip
        rows, source_length = input_ids.shape
        self.batch_size, self.capacity = rows, capacity
        cross_bias = torch.zeros((rows, 1, 1, source_length), dtype=self.dtype, device=device)
        if mask is not None:
            cross_bias.masked_fill_(mask[:, None, None, :] == 0, self.mask_value)
        projections = [((layer.cross_k, None), (layer.cross_v, None)) for layer in self.layers]
        self.source = SourceAttention(hidden, projections, self.heads, cross_bias, scale=1.0)
        self.cache = StaticCache(
            len(self.layers), rows, self.heads, capacity, self.head_dim, like=self.embed
        )
        attention = model.decoder.block[0].layer[0].SelfAttention
        distance = torch.arange(capacity, device=device)
        buckets = _decoder_bucket(
            distance,
            attention.relative_attention_num_buckets,
            attention.relative_attention_max_distance,
        )
        # (heads, capacity): the bias of a key `d` positions back, read back to front so that
        # a single query at position p takes its bias as a view: reversed[:, capacity-1-p:]
        by_distance = attention.relative_attention_bias.weight[buckets].T.to(self.dtype)
        self.bias_by_distance = by_distance.contiguous()
        self.bias_reversed = by_distance.flip(-1).contiguous()

    def _position_bias(self, starts: torch.Tensor | int, width: int, extent: int) -> torch.Tensor:
        """Relative-position bias plus the causal mask, (rows or 1, heads, width, extent)."""
        if isinstance(starts, int) and width == 1:
            first = self.capacity - 1 - starts
            bias = self.bias_reversed[None, :, None, first : first + extent]
            # CUDA's fused attention kernels read the mask in aligned blocks: a view starting
            # anywhere crashes them in half precision ("misaligned address"); a copy is aligned
            return bias if bias.device.type == "cpu" else bias.clone()
        keys = torch.arange(extent, device=self.embed.device)
        queries = query_positions(starts, width, keys.device)
        distance = queries[:, :, None] - keys  # (rows, width, extent)
        bias = self.bias_by_distance[:, distance.clamp(min=0)].transpose(0, 1)
        return bias.masked_fill((distance < 0)[:, None], self.mask_value)

    def step(
        self, new_ids: Ids, starts: Starts, rows: Rows = None, keep: Keep = None
    ) -> torch.Tensor:
        """`Stepper.step`."""
        new_ids = new_ids.to(self.embed.device)
        count, width = new_ids.shape
        place = self.cache.place(starts, width, rows, count)
        bias = self._position_bias(starts, width, place.extent)
        hidden = F.embedding(new_ids, self.embed)
        for index, layer in enumerate(self.layers):
            normed = rms_norm(hidden, layer.norm_self)
            query = split_heads(normed @ layer.q.T, self.heads)
            key = (normed @ layer.k.T).view(count, width, self.heads, self.head_dim)
            value = (normed @ layer.v.T).view(count, width, self.heads, self.head_dim)
            attended = self.cache.attend(index, place, query, key, value, mask=bias, scale=1.0)
            hidden = _clamp_half(hidden + merge_heads(attended) @ layer.o.T)

            normed = rms_norm(hidden, layer.norm_cross)
            query = split_heads(normed @ layer.cross_q.T, self.heads)
            attended = self.source.attend(index, query, rows)
            hidden = _clamp_half(hidden + merge_heads(attended) @ layer.cross_o.T)

            normed = rms_norm(hidden, layer.norm_ff)
            inner = layer.act(normed @ layer.wi.T)
            if layer.gated:
                inner = inner * (normed @ layer.wi_gate.T)
            hidden = _clamp_half(hidden + inner.to(layer.wo.dtype) @ layer.wo.T)
        hidden = kept_positions(hidden, keep)
        hidden = rms_norm(hidden, self.final_norm)
        if self.output_scale is not None:
            hidden = hidden * self.output_scale
        self.last_hidden = hidden  # what the output layer reads (a learned fallback reads it)
        return output_logits(hidden, self.output_layer)
