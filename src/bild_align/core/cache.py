"""One model's decoding state: its encoder output (computed once) and its KV cache.

    state = DecoderState(model, input_ids, attention_mask)   # runs the encoder once
    logits = state.feed(token_ids[:, state.length:])         # (k, vocab) for the k new tokens
    state.crop(n)                                            # keep the first n cached tokens
    state = DecoderState(model, input_ids, None, capacity=129)  # the lean step where covered

Encoder-decoder models (T5, BART, ...) cache the decoder tokens; decoder-only models (GPT-2,
Llama, ...) cache the prompt and the tokens after it, so for them the prompt is simply the
first tokens fed. The state knows nothing about which tokens are "right": the decoder decides
what to feed and where to crop. Cropping touches the self-attention cache only; the
cross-attention keys/values depend on the input alone and stay valid for the whole generation.

Given a `capacity` (the most decoder tokens the call can hold), a model that `lean.supports`
(T5 family; BART, mBART, Marian, Pegasus; Llama, Mistral, Qwen2/3) runs on its lean step: the
same arithmetic over a static cache, where a crop is a position move. Every other model, or
`capacity=None`, runs transformers' own forward with a `DynamicCache`.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, EncoderDecoderCache, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from bild_align.core.lean import lean_decoder


class DecoderState:
    """A growing (and croppable) KV cache for one model, plus its encoder output if any."""

    def __init__(
        self,
        model: PreTrainedModel,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        capacity: int | None = None,
    ) -> None:
        self.model = model
        self.device = model.device
        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        self._lean_length = 0
        self.lean = (
            None if capacity is None else lean_decoder(model, input_ids, attention_mask, capacity)
        )
        if self.lean is None and self.is_encoder_decoder:
            self.attention_mask = None if attention_mask is None else attention_mask.to(self.device)
            encoder_output = model.get_encoder()(
                input_ids=input_ids.to(self.device),
                attention_mask=self.attention_mask,
                return_dict=True,
            )
            self.encoder_outputs = BaseModelOutput(
                last_hidden_state=encoder_output.last_hidden_state
            )
            self.cache = EncoderDecoderCache(_new_cache(model.config), _new_cache(model.config))
        elif self.lean is None:
            self.cache = _new_cache(model.config)

    @property
    def length(self) -> int:
        """Number of (decoder) tokens whose keys/values are cached."""
        if self.lean is not None:
            return self._lean_length
        return self.cache.get_seq_length()

    def feed(self, new_ids: torch.LongTensor, keep_last: int | None = None) -> torch.Tensor:
        """Run the decoder on `new_ids` (1, k) after the cached prefix; return logits (k, vocab),
        or for the last `keep_last` positions only (the lean step skips the output layer for the
        others)."""
        if self.lean is not None:
            logits = self.lean.step(new_ids, self._lean_length, keep=keep_last)[0]
            self._lean_length += new_ids.shape[1]
            return logits
        new_ids = new_ids.to(self.device)
        if self.is_encoder_decoder:
            output = self.model(
                encoder_outputs=self.encoder_outputs,
                attention_mask=self.attention_mask,
                decoder_input_ids=new_ids,
                past_key_values=self.cache,
                use_cache=True,
                return_dict=True,
            )
        else:
            output = self.model(
                input_ids=new_ids, past_key_values=self.cache, use_cache=True, return_dict=True
            )
        return output.logits[0] if keep_last is None else output.logits[0, -keep_last:]

    def crop(self, length: int) -> None:
        """Forget every cached token from position `length` on (no-op if fewer are cached)."""
        if self.lean is not None:
            self._lean_length = min(self._lean_length, length)
            return
        excess = self.length - length
        if excess > 0:
            # transformers 5 counts the tokens to remove, as a negative number.
            self.cache.crop(-excess)


def _new_cache(config) -> DynamicCache:
    """An empty cache. Built from the config only when some layer needs a special kind (sliding
    window, chunked attention): that costs about half a millisecond, a few percent of a short
    output's decoding time, and a plain cache grows the same layers lazily. Sliding-window
    layers keep their past (`activate_past_recording`), so that a rollback can crop them after
    the sequence has passed the window; they trim themselves back to the window on each crop."""
    layer_types = getattr(config, "layer_types", None) or ()
    special = (
        getattr(config, "sliding_window", None) is not None
        or getattr(config, "attention_chunk_size", None) is not None
        or any(kind != "full_attention" for kind in layer_types)
    )
    if not special:
        return DynamicCache()
    cache = DynamicCache(config=config)
    for layer in cache.layers:
        if hasattr(layer, "activate_past_recording"):
            layer.activate_past_recording()
    return cache
