"""A lean decoder-only step (Llama, Mistral, Qwen2, Qwen3) over a static per-row KV cache.

    decoder = LeanCausalDecoder(model, prompts, None, capacity=longest + max_new_tokens + 12)
    logits = decoder.step(prompts, 0)              # (rows, k, vocab): each row's prompt, written
                                                   # at positions 0 .. k-1 (no padding inside)
    logits = decoder.step(new_ids, starts, rows)   # per-row positions, a subset of the rows

The same contract as `lean_t5.LeanT5Decoder`, for the decoder-only families users pair most:
rotary positions (default, linear, llama3 and YaRN scaling, read from the model's own rotary
module), grouped-query attention, per-layer sliding windows (Mistral, Qwen2/3's
`layer_types`), projection biases (Qwen2) and per-head query/key norms (Qwen3). Weights are
read in place. A row's tokens occupy positions 0 .. length-1 of its cache and a token's
rotary position is its cache position, so a prompt is given without its padding; a rollback is
a smaller start for the next write, and anything beyond a query's own position is masked.
Sliding windows mask keys `window` or more positions back; nothing is evicted, so a rollback
past the window needs no recomputation.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers import PreTrainedModel

from bild_align.core.engines import Ids, Keep, Mask, Model, Rows, Starts
from bild_align.core.engines.lean_cache import StaticCache
from bild_align.core.engines.lean_ops import (
    causal_mask,
    kept_positions,
    merge_heads,
    plain_weights,
    query_positions,
    rms_norm,
)
from bild_align.core.engines.output_layer import output_logits

FAMILIES = {"llama", "mistral", "qwen2", "qwen3"}
# rotary variants whose angles depend on the position only (not on the sequence's length)
ROTARY_TYPES = {"default", "linear", "llama3", "yarn"}


def supports(model: PreTrainedModel) -> bool:
    """True for the decoder-only families above with full rotary dimensions, a position-only
    rotary variant and plain weights (`lean_ops.plain_weights`); others keep transformers'
    forward."""
    config = model.config
    inner = getattr(model, "model", None)
    rotary = getattr(inner, "rotary_emb", None)
    return (
        getattr(config, "model_type", None) in FAMILIES
        and not getattr(config, "is_encoder_decoder", False)
        and rotary is not None
        and getattr(rotary, "rope_type", None) in ROTARY_TYPES
        and getattr(config, "partial_rotary_factor", 1.0) in (None, 1.0)
        and plain_weights(model)
    )


def _windows(config) -> list[int | None]:
    """Each layer's sliding window (None: it attends to the whole past)."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return [window if kind == "sliding_attention" else None for kind in layer_types]
    return [window] * config.num_hidden_layers


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, half-split layout (as Llama's checkpoints store q/k)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class _Layer:
    """One decoder layer's modules and weights (references to the model's parameters)."""

    def __init__(self, layer, window: int | None) -> None:
        attention, mlp = layer.self_attn, layer.mlp
        self.norm_attention = layer.input_layernorm
        self.norm_mlp = layer.post_attention_layernorm
        self.q, self.k, self.v, self.o = (
            (projection.weight, projection.bias)
            for projection in (
                attention.q_proj,
                attention.k_proj,
                attention.v_proj,
                attention.o_proj,
            )
        )
        self.q_norm = getattr(attention, "q_norm", None)
        self.k_norm = getattr(attention, "k_norm", None)
        self.gate, self.up, self.down = (
            (projection.weight, projection.bias)
            for projection in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        )
        self.act = mlp.act_fn
        self.window = window


class LeanCausalDecoder:
    """A decoder-only model's static cache of `capacity` positions for the rows of `input_ids`,
    and its step (see the module docstring). The prompts are not read here: a row's first step
    feeds its prompt (the constructor's arguments are every lean decoder's)."""

    def __init__(self, model: Model, input_ids: Ids, attention_mask: Mask, capacity: int) -> None:
        rows = input_ids.shape[0]
        config, inner = model.config, model.model
        self.device = model.device
        self.layers = [
            _Layer(layer, window)
            for layer, window in zip(inner.layers, _windows(config), strict=True)
        ]
        self.embed = inner.embed_tokens.weight
        self.final_norm = inner.norm
        self.output_layer = model.lm_head
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = self.head_dim**-0.5
        self.batch_size = rows
        self.cache = StaticCache(
            len(self.layers), rows, self.kv_heads, capacity, self.head_dim, like=self.embed
        )
        positions = torch.arange(capacity, device=self.device)[None]
        probe = self.embed.new_zeros(())  # the rotary module reads its dtype and device
        cos, sin = inner.rotary_emb(probe, positions)  # (1, capacity, head_dim), scaling included
        self.cos, self.sin = cos[0], sin[0]

    def _masks(self, queries: torch.Tensor, extent: int) -> dict[int | None, torch.Tensor]:
        """Which keys each query sees, (rows or 1, 1, width, extent), per window in use."""
        windows = {layer.window for layer in self.layers}
        return {window: causal_mask(queries, extent, window) for window in windows}

    def step(
        self, new_ids: Ids, starts: Starts, rows: Rows = None, keep: Keep = None
    ) -> torch.Tensor:
        """`Stepper.step`."""
        new_ids = new_ids.to(self.device)
        count, width = new_ids.shape
        single = isinstance(starts, int)
        place = self.cache.place(starts, width, rows, count)
        extent = place.extent
        device = new_ids.device
        queries = query_positions(starts, width, device)
        if single:
            cos, sin = self.cos[None, None, starts:extent], self.sin[None, None, starts:extent]
        else:
            cos, sin = self.cos[queries][:, None], self.sin[queries][:, None]
        # one query per row at one position sees every key up to it: no mask is needed, and a
        # window is a slice of the keys
        masks = None if single and width == 1 else self._masks(queries, extent)
        hidden = F.embedding(new_ids, self.embed)
        for index, layer in enumerate(self.layers):
            normed = rms_norm(hidden, layer.norm_attention)
            query = F.linear(normed, *layer.q).view(count, width, self.heads, self.head_dim)
            key = F.linear(normed, *layer.k).view(count, width, self.kv_heads, self.head_dim)
            value = F.linear(normed, *layer.v).view(count, width, self.kv_heads, self.head_dim)
            if layer.q_norm is not None:
                query, key = rms_norm(query, layer.q_norm), rms_norm(key, layer.k_norm)
            query = _rotate(query.transpose(1, 2), cos, sin)
            key = _rotate(key.transpose(1, 2), cos, sin).transpose(1, 2)
            first = 0
            if masks is None and layer.window is not None:
                first = max(0, extent - layer.window)
            attended = self.cache.attend(
                index,
                place,
                query,
                key,
                value,
                mask=None if masks is None else masks[layer.window],
                scale=self.scale,
                first=first,
                enable_gqa=self.kv_heads != self.heads,
            )
            merged = merge_heads(attended)
            hidden = hidden + F.linear(merged, *layer.o)
            normed = rms_norm(hidden, layer.norm_mlp)
            inner = layer.act(F.linear(normed, *layer.gate)) * F.linear(normed, *layer.up)
            hidden = hidden + F.linear(inner, *layer.down)
        hidden = rms_norm(kept_positions(hidden, keep), self.final_norm)
        self.last_hidden = hidden  # what the output layer reads (a learned fallback reads it)
        return output_logits(hidden, self.output_layer)
