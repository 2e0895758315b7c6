"""A drafter's output layer over part of the vocabulary, and the logits every step reads.

    layer = ReducedOutputLayer(model.lm_head.weight, kept_ids, vocab_size=250112)
    model.set_output_embeddings(layer)        # `drafters.restrict_vocab` does it
    logits = output_logits(hidden, layer)     # (…, vocab_size): what the lean steps return
    output_size(model)                        # the full vocabulary, reduced layer or not

The drafter computes K rows of its output layer instead of the whole vocabulary (mT5: 250k
rows, more than a dozen decoder layers' work per step); the logits are still full-width, with
every other token at the lowest finite value (probability exactly 0), so that greedy choices,
fallback rules and speculative sampling read them as any model's. The large model checks with
its full vocabulary: the exact mode stays exact.
"""

from __future__ import annotations

import torch
from torch import nn


class ReducedOutputLayer(nn.Module):
    """An output layer that scores only the `kept` token ids."""

    def __init__(self, weight: torch.Tensor, kept: torch.Tensor, vocab_size: int) -> None:
        super().__init__()
        kept = kept.to(device=weight.device, dtype=torch.long)
        self.weight = nn.Parameter(weight.detach()[kept].clone(), requires_grad=False)
        self.register_buffer("kept", kept)
        self.vocab_size = vocab_size

    @property
    def out_features(self) -> int:
        return self.vocab_size

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        scores = hidden @ self.weight.T
        lowest = torch.finfo(scores.dtype).min
        logits = scores.new_full((*scores.shape[:-1], self.vocab_size), lowest)
        return logits.index_copy_(-1, self.kept, scores)


def output_logits(hidden: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """The logits of an output layer (a bias-free linear one, or a reduced one)."""
    if isinstance(layer, ReducedOutputLayer):
        return layer(hidden)
    return hidden @ layer.weight.T


def output_size(model) -> int:
    """How many token ids the model's logits cover (a reduced layer: the whole vocabulary)."""
    layer = model.get_output_embeddings()
    if isinstance(layer, ReducedOutputLayer):
        return layer.vocab_size
    return layer.weight.shape[0]
