"""Batched greedy decoding that gives, row for row, what unbatched greedy decoding gives.

    order = length_sorted(lengths)                  # longest first: padding stays minimal
    for batch in chunked(order, 32):
        texts = greedy_texts(model, tokenizer, [sources[i] for i in batch], 256, 128)

Rows of similar length share a batch, so little compute goes to padding; the attention mask
keeps padding out of every row's result, which is why the outputs equal unbatched decoding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def length_sorted(lengths: Sequence[int]) -> list[int]:
    """Indices ordered by decreasing length (ties keep their order), longest first so that a
    batch too large for memory fails at once rather than hours in."""
    return sorted(range(len(lengths)), key=lambda index: -lengths[index])


def chunked(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def token_lengths(
    tokenizer, sources: Sequence[str], max_source_length: int | None, special_tokens: bool = True
) -> list[int]:
    """Each text's length in tokens (cut at `max_source_length`; None: uncut)."""
    encoded = tokenizer(
        list(sources),
        truncation=max_source_length is not None,
        max_length=max_source_length,
        add_special_tokens=special_tokens,
    )
    return [len(ids) for ids in encoded["input_ids"]]


@torch.inference_mode()
def greedy_texts(
    model,
    tokenizer,
    sources: Sequence[str],
    max_source_length: int,
    max_new_tokens: int,
    prompter=None,
) -> list[str]:
    """Greedy outputs of `model` for `sources`, decoded without special tokens (with the
    model's generation config: calibrate gives it `models.use_plain_generation` first). With
    a decoder-only `prompter` (`bild_align.data.prompts`), `sources` are ready prompts, left-padded,
    and the outputs are their completions."""
    if prompter is not None and prompter.decoder_only:
        batch = prompter.encode_prompts(tokenizer, sources).to(model.device)
    else:
        batch = tokenizer(
            list(sources),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_source_length,
        ).to(model.device)
    output = model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)
    if prompter is not None:
        return prompter.completions(tokenizer, output, batch["input_ids"])
    return tokenizer.batch_decode(output, skip_special_tokens=True)
