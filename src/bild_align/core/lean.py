"""Which models run on a lean decoder step, and building one for a call.

    decoder = lean_decoder(model, input_ids, attention_mask, capacity)   # None: not covered
    logits = decoder.step(new_ids, starts, rows, keep=...)

T5 / mT5 / T5 v1.1 run on `lean_t5.LeanT5Decoder`; BART, mBART, Marian and Pegasus on
`lean_bart.LeanBartDecoder`; Llama, Mistral, Qwen2 and Qwen3 on
`lean_causal.LeanCausalDecoder`. Every other model keeps transformers' forward.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from bild_align.core import lean_bart, lean_causal, lean_t5

LEAN_DECODERS = (lean_t5.LeanT5Decoder, lean_bart.LeanBartDecoder, lean_causal.LeanCausalDecoder)
LeanDecoder = lean_t5.LeanT5Decoder | lean_bart.LeanBartDecoder | lean_causal.LeanCausalDecoder


def supports(model: PreTrainedModel) -> bool:
    """Whether `model` runs on a lean decoder step."""
    return lean_t5.supports(model) or lean_bart.supports(model) or lean_causal.supports(model)


def lean_decoder(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    capacity: int,
) -> LeanDecoder | None:
    """A lean decoder for one call over `input_ids`' rows (encoder-decoder models encode them
    now; decoder-only models are fed their prompts as the first step), or None."""
    if lean_t5.supports(model):
        return lean_t5.LeanT5Decoder(model, input_ids, attention_mask, capacity)
    if lean_bart.supports(model):
        return lean_bart.LeanBartDecoder(model, input_ids, attention_mask, capacity)
    if lean_causal.supports(model):
        return lean_causal.LeanCausalDecoder(model, input_ids.shape[0], capacity)
    return None
