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

from bild_align.core.engines import lean_bart, lean_causal, lean_t5

# each module's `supports(model)` says whether its decoder serves the model
LEAN_DECODERS = {
    lean_t5: lean_t5.LeanT5Decoder,
    lean_bart: lean_bart.LeanBartDecoder,
    lean_causal: lean_causal.LeanCausalDecoder,
}
LeanDecoder = lean_t5.LeanT5Decoder | lean_bart.LeanBartDecoder | lean_causal.LeanCausalDecoder


def supports(model: PreTrainedModel) -> bool:
    """Whether `model` runs on a lean decoder step."""
    return any(module.supports(model) for module in LEAN_DECODERS)


def lean_decoder(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    capacity: int,
) -> LeanDecoder | None:
    """A lean decoder for one call over `input_ids`' rows (encoder-decoder models encode them
    now; decoder-only models are fed their prompts as the first step), or None."""
    for module, decoder in LEAN_DECODERS.items():
        if module.supports(model):
            return decoder(model, input_ids, attention_mask, capacity)
    return None
