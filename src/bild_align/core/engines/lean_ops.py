"""What the lean decoder steps (`lean_t5`, `lean_causal`, `lean_bart`) share (their attention
state: `lean_cache`).

    if plain_weights(model): ...                      # can a lean step read these weights?
    normed = rms_norm(hidden, layer.input_layernorm)  # T5LayerNorm, LlamaRMSNorm, Qwen3RMSNorm
    hidden = kept_positions(hidden, keep)             # where the output layer will run
    queries = query_positions(starts, width, device)  # each new token's cache position
    seen = causal_mask(queries, extent, window)       # which cached keys each query attends to
    hidden, mask = encode(model, input_ids, attention_mask)  # encoder-decoder: the encoder once
    heads_first = split_heads(projected, heads)       # (rows, k, h*d) -> (rows, h, k, d)

Each is written once here so that the steps cannot drift apart.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers import PreTrainedModel


def rms_norm(hidden: torch.Tensor, norm) -> torch.Tensor:
    """An RMS norm module's arithmetic (no mean, no bias, the variance in float32), reading
    its `weight` and `variance_epsilon`."""
    weight = norm.weight
    if hidden.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(hidden, weight.shape, weight, norm.variance_epsilon)
    normed = F.rms_norm(hidden.float(), weight.shape, None, norm.variance_epsilon)
    return weight * normed.to(weight.dtype)


def kept_positions(hidden: torch.Tensor, keep: torch.Tensor | int | None) -> torch.Tensor:
    """The positions of `hidden` (rows, k, width) whose logits are read: all (None), the last
    n (an int: (rows, n, width)), or those a boolean (rows, k) mask marks ((marked, width))."""
    if isinstance(keep, int):
        return hidden[:, max(0, hidden.shape[1] - keep) :]
    return hidden if keep is None else hidden[keep]


def plain_weights(model: PreTrainedModel) -> bool:
    """Whether a lean step can read the model's weights directly: eval mode (no dropout), not
    quantized, a floating-point output layer, and every weight on one device (a model split
    or offloaded by `device_map` moves weights in hooks that a lean step never calls)."""
    placements = set((getattr(model, "hf_device_map", None) or {}).values())
    return (
        not model.training
        and not getattr(model, "is_quantized", False)
        and hasattr(model, "lm_head")
        and model.lm_head.weight.dtype.is_floating_point
        and len(placements) <= 1
        and not placements & {"disk", "meta"}
    )


def query_positions(starts: torch.Tensor | int, width: int, device) -> torch.Tensor:
    """The cache positions of a step's `width` new tokens: (1, width) when every row starts at
    the int `starts`, else (rows, width) from a tensor of per-row starts."""
    offsets = torch.arange(width, device=device)
    if isinstance(starts, int):
        return (starts + offsets)[None]
    return starts.to(device)[:, None] + offsets


def causal_mask(queries: torch.Tensor, extent: int, window: int | None = None) -> torch.Tensor:
    """Which of the first `extent` cached keys each query position (rows or 1, width) sees:
    those at or before it (and, with a sliding `window`, fewer than `window` back), as a
    boolean (rows or 1, 1, width, extent) attention mask."""
    distance = queries[:, :, None] - torch.arange(extent, device=queries.device)
    seen = distance >= 0
    if window is not None:
        seen &= distance < window
    return seen[:, None]


def encode(
    model: PreTrainedModel, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An encoder-decoder model's encoder output for one call, and the mask on its device."""
    input_ids = input_ids.to(model.device)
    mask = None if attention_mask is None else attention_mask.to(model.device)
    encoded = model.get_encoder()(input_ids=input_ids, attention_mask=mask, return_dict=True)
    return encoded.last_hidden_state, mask


def split_heads(projected: torch.Tensor, heads: int) -> torch.Tensor:
    """(rows, length, heads*dim) -> (rows, heads, length, dim)."""
    rows, length, width = projected.shape
    return projected.view(rows, length, heads, width // heads).transpose(1, 2)


def merge_heads(attended: torch.Tensor) -> torch.Tensor:
    """(rows, heads, length, dim) -> (rows, length, heads*dim)."""
    rows, heads, length, dim = attended.shape
    return attended.transpose(1, 2).reshape(rows, length, heads * dim)
