"""What the decoders check before they run, and what they read off a model's configuration.

check_pair(small, large, vocab_size=None)      # ValueError saying what to do, else None
input_ids, mask = check_inputs(input_ids, mask)  # (batch, length), validated
eos_token_ids(large), pad_token_id(large)      # the ids that end and pad an output
prefixes(large, input_ids, mask)               # what each row's decoder is fed first
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the policies import the number checks, and must not import torch (`configs`)
    import torch
    from transformers import PreTrainedModel


def eos_token_ids(model: PreTrainedModel) -> frozenset[int]:
    """The ids that end an output: the generation config's EOS, else the model config's."""
    config, generation = model.config, model.generation_config
    eos = generation.eos_token_id if generation.eos_token_id is not None else config.eos_token_id
    return frozenset([eos] if isinstance(eos, int) else (eos or []))


def pad_token_id(model: PreTrainedModel) -> int:
    """The id `generate` pads finished rows with: the pad token, else the (first) EOS."""
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        eos_ids = eos_token_ids(model)
        pad = min(eos_ids) if eos_ids else 0
    return int(pad)


def special_tokens(model: PreTrainedModel) -> tuple[int | None, frozenset[int], int | None]:
    config, generation = model.config, model.generation_config
    start = generation.decoder_start_token_id
    if start is None:
        start = getattr(config, "decoder_start_token_id", None)
    return start, eos_token_ids(model), getattr(generation, "forced_bos_token_id", None)


def is_encoder_decoder(model: PreTrainedModel) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def forced_first(model: PreTrainedModel) -> int | None:
    """The first output token an encoder-decoder model's generation config forces (BART's
    `forced_bos_token_id`); decoder-only outputs follow a prompt and are never forced."""
    return special_tokens(model)[2] if is_encoder_decoder(model) else None


def check_pair(
    small: PreTrainedModel, large: PreTrainedModel, vocab_size: int | None = None
) -> None:
    """Raise ValueError (saying what to do) unless the two models can decode together.

    `vocab_size` is the number of token ids the pair shares (the tokenizer's length): real pairs
    that share a tokenizer can pad their output embeddings to different sizes (Qwen2.5-0.5B has
    151,936 rows, Qwen2.5-7B 152,064); the decoders then choose among the shared ids only."""
    if is_encoder_decoder(small) != is_encoder_decoder(large):
        kinds = {True: "an encoder-decoder", False: "a decoder-only"}
        raise ValueError(
            f"The small model is {kinds[is_encoder_decoder(small)]} {type(small).__name__} but "
            f"the large model is {kinds[is_encoder_decoder(large)]} {type(large).__name__}; "
            "pair two encoder-decoder models (T5, mT5, BART) or two decoder-only models "
            "(GPT-2, Llama, Qwen, ...) that share a tokenizer."
        )
    from bild_align.core.engines.output_layer import output_size  # torch: not at import

    small_vocab = output_size(small)
    large_vocab = output_size(large)
    if vocab_size is None and small_vocab != large_vocab:
        raise ValueError(
            f"The models' vocabularies differ (small: {small_vocab} tokens, large: "
            f"{large_vocab}). The decoders compare token ids, so both models must share one "
            "tokenizer; if they do and only their embeddings are padded to different sizes, "
            "pass vocab_size=len(tokenizer)."
        )
    if vocab_size is not None and vocab_size > min(small_vocab, large_vocab):
        raise ValueError(
            f"vocab_size={vocab_size} exceeds the output embeddings (small: {small_vocab}, "
            f"large: {large_vocab}); give the tokenizer's length, e.g. vocab_size=len(tokenizer)."
        )
    if special_tokens(small) != special_tokens(large):
        raise ValueError(
            "The models' special tokens differ (decoder start, EOS or forced BOS): small "
            f"{special_tokens(small)}, large {special_tokens(large)}. Use a pair trained with "
            "the same tokenizer, or set the small model's generation_config to match the large."
        )
    if is_encoder_decoder(large) and special_tokens(large)[0] is None:
        raise ValueError(
            "The large model has no decoder_start_token_id; set "
            "large.generation_config.decoder_start_token_id."
        )


def check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (got {value!r}).")


def check_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
        attention_mask = None if attention_mask is None else attention_mask.reshape(1, -1)
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must have shape (batch, length); got {tuple(input_ids.shape)}."
        )
    if input_ids.shape[0] == 0:
        raise ValueError("input_ids holds no rows: give at least one input.")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: give the model at least one token.")
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                f"{tuple(input_ids.shape)}; they must match."
            )
        if not bool(attention_mask.any(dim=1).all()):
            raise ValueError("attention_mask masks every input token of a row: it is empty.")
    return input_ids, attention_mask


def prefixes(large, input_ids, attention_mask) -> list[list[int]]:
    """What each row's decoder is fed before its first new token: the decoder start token, or
    (decoder-only) the row's prompt without its padding, so a token's position is its slot."""
    if is_encoder_decoder(large):
        return [[special_tokens(large)[0]]] * input_ids.shape[0]
    if attention_mask is None:
        return input_ids.tolist()
    return [row[keep > 0].tolist() for row, keep in zip(input_ids, attention_mask, strict=True)]
