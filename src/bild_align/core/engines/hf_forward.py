"""transformers' own forward, with a croppable KV cache, behind the lean steps' contract: the
decode loop's path for models without a lean step (and for `engine="transformers"`).

    state = DecoderState(model, input_ids, attention_mask)   # one row; runs the encoder once
    logits = state.feed(token_ids[:, state.length:])         # (k, vocab) for the k new tokens
    state.crop(n)                                            # keep the first n cached tokens
    decoder = TransformersDecoder(model, input_ids, attention_mask)  # a batch, one state a row
    logits = decoder.step(new_ids, starts, rows, keep)       # as `lean_t5.LeanT5Decoder.step`

Decoder-only models cache the prompt and the tokens after it (the prompt is simply the first
tokens fed); encoder-decoder models cache the decoder tokens, and their cross-attention keys and
values, which depend on the input alone, are never cropped. Each row has its own state, so a
row's arithmetic never depends on the rows beside it.
"""

from __future__ import annotations

import functools
import inspect

import torch
from transformers import DynamicCache, EncoderDecoderCache, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from bild_align.core.checks import is_encoder_decoder
from bild_align.core.engines import Ids, Keep, Rows, Starts
from bild_align.core.engines.shared_encoder import encoded_once


class DecoderState:
    """A growing (and croppable) KV cache for one model, plus its encoder output if any."""

    def __init__(
        self,
        model: PreTrainedModel,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
    ) -> None:
        self.model = model
        self.device = model.device
        self.is_encoder_decoder = is_encoder_decoder(model)
        self.cache_argument = cache_argument(type(model))
        if self.is_encoder_decoder:
            self.attention_mask = None if attention_mask is None else attention_mask.to(self.device)
            encoder = model.get_encoder()
            hidden = encoded_once(
                encoder, input_ids, attention_mask,
                lambda: encoder(
                    input_ids=input_ids.to(self.device), attention_mask=self.attention_mask,
                    return_dict=True,
                ).last_hidden_state,
            )  # fmt: skip
            self.encoder_outputs = BaseModelOutput(last_hidden_state=hidden)
            self.cache = EncoderDecoderCache(_new_cache(model.config), _new_cache(model.config))
        else:
            self.cache = _new_cache(model.config)

    @property
    def length(self) -> int:
        """Number of (decoder) tokens whose keys/values are cached."""
        return self.cache.get_seq_length()

    def feed(self, new_ids: torch.LongTensor, keep_last: int | None = None) -> torch.Tensor:
        """Run the decoder on `new_ids` (1, k) after the cached prefix; return logits (k, vocab),
        or for the last `keep_last` positions only."""
        new_ids = new_ids.to(self.device)
        if self.is_encoder_decoder:
            output = self.model(
                encoder_outputs=self.encoder_outputs,
                attention_mask=self.attention_mask,
                decoder_input_ids=new_ids,
                use_cache=True,
                return_dict=True,
                **{self.cache_argument: self.cache},
            )
        else:
            output = self.model(
                input_ids=new_ids,
                use_cache=True,
                return_dict=True,
                **{self.cache_argument: self.cache},
            )
        return output.logits[0] if keep_last is None else output.logits[0, -keep_last:]

    def crop(self, length: int) -> None:
        """Forget every cached token from position `length` on (no-op if fewer are cached)."""
        excess = self.length - length
        if excess > 0:
            # transformers 5 counts the tokens to remove, as a negative number.
            self.cache.crop(-excess)


class TransformersDecoder:
    """A batch's rows, each on its own `DecoderState`, behind the lean steps' `step`."""

    def __init__(
        self,
        model: PreTrainedModel,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
    ) -> None:
        self.device = model.device
        self.output_layer = model.get_output_embeddings()
        self.capture_hidden = False  # set by a learned fallback: keep what the output layer reads
        self.last_hidden: torch.Tensor | None = None
        self.batch_size = input_ids.shape[0]
        self.rows = [
            DecoderState(
                model,
                input_ids[index : index + 1],
                None if attention_mask is None else attention_mask[index : index + 1],
            )
            for index in range(self.batch_size)
        ]

    def step(self, new_ids: Ids, starts: Starts, rows: Rows = None, keep: Keep = None):
        """`Stepper.step`: crop each listed row's cache to its start and feed it its tokens
        (up to the last position `keep` marks: what lies after is padding)."""
        indices = range(self.batch_size) if rows is None else rows.tolist()
        firsts = [starts] * len(indices) if isinstance(starts, int) else starts.tolist()
        seen: list[torch.Tensor] = []
        hook = None
        if self.capture_hidden:  # the output layer's input, taken as it passes
            hook = self.output_layer.register_forward_hook(
                lambda _module, inputs, _output: seen.append(inputs[0][0])
            )
        outputs, hidden = [], []
        try:
            for place, (index, start) in enumerate(zip(indices, firsts, strict=True)):
                state, ids = self.rows[index], new_ids[place : place + 1]
                state.crop(start)
                count = keep
                if isinstance(keep, torch.Tensor):
                    marked = keep[place].nonzero()[:, 0].tolist()
                    ids, count = ids[:, : marked[-1] + 1], len(marked)
                outputs.append(state.feed(ids, keep_last=count))
                if seen:
                    hidden.append(seen.pop()[-len(outputs[-1]) :])
        finally:
            if hook is not None:
                hook.remove()
        join = torch.cat if isinstance(keep, torch.Tensor) else torch.stack
        self.last_hidden = join(hidden) if hidden else None
        return join(outputs)


@functools.cache
def cache_argument(model_class: type) -> str:
    """The name a model class's forward takes its KV cache by: `cache` from transformers 5.25
    on (where `past_key_values` is deprecated, with a warning on every call), `past_key_values`
    before it and for models not yet renamed. Once per class: rows are built on every call."""
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


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
