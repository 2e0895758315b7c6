"""What the lean decoder steps (`lean_t5`, `lean_causal`) share.

    if plain_weights(model): ...                      # can a lean step read these weights?
    normed = rms_norm(hidden, layer.input_layernorm)  # T5LayerNorm, LlamaRMSNorm, Qwen3RMSNorm
    hidden = kept_positions(hidden, keep)             # where the output layer will run

Each is written once here so that the two steps cannot drift apart.
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
