"""How a task row becomes a model's input, and the model's output becomes text again, for
encoder-decoder and decoder-only models alike.

    prompter = Prompter.for_model(large, task, template=None, chat=False)
    batch = prompter.encode(tokenizer, sources, max_source_length)   # left-padded if causal
    out = large.generate(**batch, max_new_tokens=64)
    texts = prompter.completions(tokenizer, out, batch["input_ids"])  # the new text only

An encoder-decoder model reads the row's source as it is (the task's prefix included, as
today). A decoder-only model reads a prompt: the task's template (e.g. "Translate German to
English:\\n{source}\\n") around the source, optionally wrapped by the tokenizer's chat template
as a user turn with generation starting at the assistant turn; its output is the completion
only, so that metrics and calibration targets compare with the encoder-decoder path. A source
longer than `max_source_length` tokens is cut to that many (the template is never cut), as the
encoder-decoder path truncates its input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bild_align.errors import UserError

SOURCE_FIELD = "{source}"


def check_template(template: str | None) -> None:
    if template is not None and SOURCE_FIELD not in template:
        raise UserError(
            f"--prompt-template {template!r} has no {SOURCE_FIELD}: say where the row's "
            'source goes, e.g. "Translate German to English:\\n{source}\\n"'
        )


@dataclass(frozen=True)
class Prompter:
    decoder_only: bool
    template: str | None = None  # None: the source as it is (encoder-decoder default)
    chat: bool = False
    task_prefix: str = ""  # the encoder-decoder prefix in the rows' sources ("summarize: ")

    @classmethod
    def for_model(cls, model, task, template: str | None = None, chat: bool = False) -> Prompter:
        """The prompting a stage uses: the template given, else the task's for decoder-only
        models; `chat` needs a tokenizer with a chat template (checked in `check_tokenizer`)."""
        check_template(template)
        decoder_only = not getattr(model.config, "is_encoder_decoder", False)
        if chat and not decoder_only:
            raise UserError(
                "--chat-template is for decoder-only models; an encoder-decoder model reads "
                "the source as it is"
            )
        if decoder_only and template is None:
            template = task.prompt_template
        return cls(decoder_only, template, chat, task.prefix if decoder_only else "")

    def check_tokenizer(self, tokenizer) -> None:
        if self.chat and not getattr(tokenizer, "chat_template", None):
            raise UserError(
                "--chat-template: this tokenizer has no chat template; leave the option out "
                "(the prompt template alone is used) or use the model's chat variant"
            )

    def describe(self) -> dict:
        """What a run records about its prompts (calibration cards, eval results)."""
        return {"prompt_template": self.template, "chat_template": self.chat}

    def prompt_texts(self, tokenizer, sources: Sequence[str], max_source_length: int) -> list[str]:
        """Each source, cut to `max_source_length` tokens, in the template (and chat turn)."""
        if self.template is None:
            return list(sources)
        texts = []
        for source in sources:
            source = source.removeprefix(self.task_prefix)  # a prompt replaces T5's prefix
            ids = tokenizer(source, add_special_tokens=False)["input_ids"]
            if len(ids) > max_source_length:
                source = tokenizer.decode(ids[:max_source_length], skip_special_tokens=True)
            prompt = self.template.replace(SOURCE_FIELD, source)
            if self.chat:
                prompt = tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}], tokenize=False,
                    add_generation_prompt=True,
                )  # fmt: skip
            texts.append(prompt)
        return texts

    def row_inputs(self, tokenizer, rows, max_source_length: int) -> list[str]:
        """What the model reads for each task row: its source, or (decoder-only) its ready
        `prompt` column where it has one, else the template around its source."""
        if not self.decoder_only:
            return list(rows["source"])
        if "prompt" in rows.column_names:
            return list(rows["prompt"])
        return self.prompt_texts(tokenizer, list(rows["source"]), max_source_length)

    def input_lengths(self, tokenizer, texts: Sequence[str], max_source_length: int) -> list[int]:
        """Each `row_inputs` text's length in tokens, as `encode_inputs` will feed it."""
        from bild_align.models.batched_generate import token_lengths

        if self.decoder_only:
            return token_lengths(tokenizer, texts, None, special_tokens=not self.chat)
        return token_lengths(tokenizer, texts, max_source_length)

    def encode_inputs(self, tokenizer, texts: Sequence[str], max_source_length: int):
        """A batch of `row_inputs` texts: prompts as they are, sources truncated."""
        if self.decoder_only:
            return self.encode_prompts(tokenizer, texts)
        return self.encode(tokenizer, texts, max_source_length)

    def encode(self, tokenizer, sources: Sequence[str], max_source_length: int):
        """A padded batch (`input_ids`, `attention_mask`), left-padded for decoder-only models
        as `generate` needs; the encoder-decoder input is truncated to max_source_length."""
        if not self.decoder_only and self.template is None:
            return tokenizer(
                list(sources), return_tensors="pt", padding=True, truncation=True,
                max_length=max_source_length,
            )  # fmt: skip
        prompts = self.prompt_texts(tokenizer, sources, max_source_length)
        return self.encode_prompts(tokenizer, prompts)

    def encode_prompts(self, tokenizer, prompts: Sequence[str]):
        """Ready prompt texts (a `prompt` column, or `prompt_texts`) as a padded batch."""
        side = tokenizer.padding_side
        tokenizer.padding_side = "left" if self.decoder_only else "right"
        try:
            # a chat template writes the special tokens itself
            return tokenizer(
                list(prompts), return_tensors="pt", padding=True,
                add_special_tokens=not self.chat,
            )  # fmt: skip
        finally:
            tokenizer.padding_side = side

    def source_room(self, tokenizer, model, max_source_length: int, max_new_tokens: int) -> int:
        """A default `max_source_length` lowered so that the template, the source and the new
        tokens fit a decoder-only model's context (a length the user gave is kept, and
        `check_fits` refuses it if it does not fit)."""
        limit = _context(model)
        if not self.decoder_only or self.template is None or not limit:
            return max_source_length
        template = self.prompt_texts(tokenizer, [""], 0)[0]
        overhead = len(tokenizer(template, add_special_tokens=not self.chat)["input_ids"])
        room = limit - max_new_tokens - overhead
        return max(1, min(max_source_length, room))

    def check_fits(self, model, longest_prompt: int, max_new_tokens: int) -> None:
        """Refuse, before any decoding, prompts that leave no room for the output in a
        decoder-only model's context (lower --max-source-length or --max-new-tokens)."""
        limit = _context(model)
        if self.decoder_only and limit and longest_prompt + max_new_tokens > limit:
            raise UserError(
                f"the longest prompt has {longest_prompt} tokens and --max-new-tokens is "
                f"{max_new_tokens}: together past the model's context of {limit} positions; "
                "lower --max-source-length (the source is cut, never the template) or "
                "--max-new-tokens"
            )

    def prefix_length(self, input_ids: torch.Tensor) -> int:
        """Tokens before the first new one in `generate`'s output: the prompt, or the start
        token of an encoder-decoder model."""
        return input_ids.shape[1] if self.decoder_only else 1

    def completions(self, tokenizer, sequences: torch.Tensor, input_ids: torch.Tensor) -> list[str]:
        new = sequences[:, self.prefix_length(input_ids) :] if self.decoder_only else sequences
        return tokenizer.batch_decode(new, skip_special_tokens=True)


def _context(model) -> int | None:
    """A decoder-only model's context length in tokens, where its config says."""
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def completion_features(
    tokenizer,
    prompts: Sequence[str],
    targets: Sequence[str],
    *,
    max_target_length: int,
    chat: bool = False,
) -> dict[str, list[list[int]]]:
    """A decoder-only model's training rows: `input_ids` = prompt + target + EOS, `labels` the
    same with the prompt masked out (-100), so that the loss covers the completion only."""
    prompt_ids = tokenizer(list(prompts), add_special_tokens=not chat)["input_ids"]
    target_ids = tokenizer(list(targets), add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    features: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for prompt, target in zip(prompt_ids, target_ids, strict=True):
        completion = (target + eos)[:max_target_length]
        features["input_ids"].append(prompt + completion)
        features["attention_mask"].append([1] * (len(prompt) + len(completion)))
        features["labels"].append([-100] * len(prompt) + completion)
    return features
