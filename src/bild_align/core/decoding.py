"""The decoder family: Big Little Decoder (BiLD), classic speculative decoding, and a plain
autoregressive baseline, greedy or sampled, for encoder-decoder and decoder-only models.

    from bild_align import bild_generate, speculative_generate, autoregressive_generate
    out = bild_generate(small, large, input_ids, fallback_threshold=0.6, rollback_threshold=2.0)
    out.sequences                    # encoder-decoder: start token + output; decoder-only:
                                     # prompt + output (the `generate` convention)
    out.stats.large_calls_per_token  # exact counts and derived rates, see `BiLDStats`
    out = speculative_generate(small, large, input_ids, gamma=4, do_sample=True, seed=0)
    out = bild_generate(small, large, batch_ids, batch_mask)   # (B, L): each row on its own
    out.sequences                    # (B, longest), padded with the pad token like `generate`
    out.row_stats[i]                 # row i's counts; out.stats holds the totals

Token ids in, token ids and counts out: no tokenizer, no timing, no I/O. The two BiLD policies
are small pure functions (`falls_back`, `rollback_index`); `_DecodeLoop` drives the two models:
the small one drafts, the large one checks the drafts in one pass and corrects or continues.

- BiLD: the small model drafts (from the first token on) until it is unsure (fallback) or has
  drafted `max_small_steps` tokens; the large model checks the drafts in one pass, replaces the
  first drafted token it finds unlikely (rollback) or else adds one token of its own, and the
  small model drafts on. `rollback_threshold=0` (or `fallback_threshold > 1`) gives
  exactly the large model's greedy output.
- Batches: pairs with a lean step (T5 and BART families, Marian, Pegasus; Llama, Mistral, Qwen2/3)
  decode all rows together (`batched.BatchLoop`), each row making exactly the decisions it
  makes alone; other models and `reference_compat` decode the rows one after the other.
  Sampled, row i draws from its own generator seeded with `seed + i` (`Sampler.for_row`): it
  is the output of decoding that row alone with that seed, whichever way the batch runs.
  `engine="transformers"` runs transformers' own forward instead of the lean steps (`lean`):
  the reference path.
- Speculative decoding: the small model drafts `gamma` tokens; the large model accepts each
  with probability min(1, p/q) and resamples the first rejected one from max(0, p - q)
  (Leviathan et al. 2023; Chen et al. 2023), so the output follows the large model's sampling
  distribution exactly; greedy, it is the large model's greedy output.
"""

from __future__ import annotations

import math
import numbers

import torch
from transformers import PreTrainedModel

from bild_align.core import lean
from bild_align.core.batched import BatchLoop
from bild_align.core.cache import DecoderState
from bild_align.core.policies import (
    FALLBACK_THRESHOLD,
    MAX_SMALL_STEPS,
    ROLLBACK_THRESHOLD,
    falls_back,
    rollback_index,
)
from bild_align.core.sampling import Sampler, large_check, speculative_verdict
from bild_align.core.stats import BiLDOutput, BiLDStats

ENGINES = ("auto", "transformers")

# --- validation --------------------------------------------------------------------------------


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


def _special_tokens(model: PreTrainedModel) -> tuple[int | None, frozenset[int], int | None]:
    config, generation = model.config, model.generation_config
    start = generation.decoder_start_token_id
    if start is None:
        start = getattr(config, "decoder_start_token_id", None)
    return start, eos_token_ids(model), getattr(generation, "forced_bos_token_id", None)


def _is_encoder_decoder(model: PreTrainedModel) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def _forced_first(model: PreTrainedModel) -> int | None:
    """The first output token an encoder-decoder model's generation config forces (BART's
    `forced_bos_token_id`); decoder-only outputs follow a prompt and are never forced."""
    return _special_tokens(model)[2] if _is_encoder_decoder(model) else None


def check_pair(
    small: PreTrainedModel, large: PreTrainedModel, vocab_size: int | None = None
) -> None:
    """Raise ValueError (saying what to do) unless the two models can decode together.

    `vocab_size` is the number of token ids the pair shares (the tokenizer's length): real pairs
    that share a tokenizer can pad their output embeddings to different sizes (Qwen2.5-0.5B has
    151,936 rows, Qwen2.5-7B 152,064); the decoders then choose among the shared ids only."""
    if _is_encoder_decoder(small) != _is_encoder_decoder(large):
        kinds = {True: "an encoder-decoder", False: "a decoder-only"}
        raise ValueError(
            f"The small model is {kinds[_is_encoder_decoder(small)]} {type(small).__name__} but "
            f"the large model is {kinds[_is_encoder_decoder(large)]} {type(large).__name__}; "
            "pair two encoder-decoder models (T5, mT5, BART) or two decoder-only models "
            "(GPT-2, Llama, Qwen, ...) that share a tokenizer."
        )
    small_vocab = small.get_output_embeddings().weight.shape[0]
    large_vocab = large.get_output_embeddings().weight.shape[0]
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
    if _special_tokens(small) != _special_tokens(large):
        raise ValueError(
            "The models' special tokens differ (decoder start, EOS or forced BOS): small "
            f"{_special_tokens(small)}, large {_special_tokens(large)}. Use a pair trained with "
            "the same tokenizer, or set the small model's generation_config to match the large."
        )
    if _is_encoder_decoder(large) and _special_tokens(large)[0] is None:
        raise ValueError(
            "The large model has no decoder_start_token_id; set "
            "large.generation_config.decoder_start_token_id."
        )


def _check_number(name: str, value: object, minimum: float, meaning: str) -> None:
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{name} must be a number >= {minimum:g} (got {value!r}): {meaning}")


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (got {value!r}).")


def _check_inputs(
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


# --- the public functions ----------------------------------------------------------------------


def bild_generate(
    small: PreTrainedModel,
    large: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    *,
    fallback_threshold: float = FALLBACK_THRESHOLD,
    rollback_threshold: float = ROLLBACK_THRESHOLD,
    max_small_steps: int = MAX_SMALL_STEPS,
    max_new_tokens: int = 128,
    reference_compat: bool = False,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    vocab_size: int | None = None,
    engine: str = "auto",
    shared_checks: bool = False,
) -> BiLDOutput:
    """Big Little Decoding of one input, or of a batch (each row on its own course).

    Args:
        small, large: two encoder-decoder or two decoder-only models sharing a vocabulary and
            special tokens, in eval mode (dropout would make the output random).
        input_ids, attention_mask: the encoder input, or the prompt: shape (1, length), or
            (batch, length) with padding as `generate` takes it for the model.
        fallback_threshold: the small model hands control to the large one when its top
            probability is below this (0: never; above 1: always, i.e. large-only decoding).
        rollback_threshold: the large model replaces a drafted token when its cross-entropy of
            that token exceeds this and its own choice differs (0: the exact mode).
        max_small_steps: most consecutive small-model tokens before the large model checks.
        max_new_tokens: most tokens generated.
        reference_compat: reproduce the original implementation's decisions (the large model
            produces the first token and the token after each correction, no check of the
            drafted tail at the end, its rollback rule, decoding on past an EOS produced by a
            rollback) to reproduce the paper's numbers token for token.
        do_sample, temperature, top_k, top_p, seed: sample instead of taking the argmax; the
            fallback reads the small model's sampling distribution, the rollback the large
            model's cross-entropy of the sampled token. In a batch, row i samples with seed + i.
        vocab_size: the token ids the models share (default: all of their output embeddings,
            which must then have the same size); pass len(tokenizer) for a pair whose
            embeddings are padded to different sizes.
        engine: "auto" runs the T5 family, BART / mBART / Marian / Pegasus, Llama, Mistral, Qwen2/3
            on the lean decoder steps (`lean`) and every other model on transformers'
            forward; "transformers" always uses the latter.
        shared_checks: in a batch decoded together, check every row that holds drafts
            whenever one row needs a check, so that the rows stay in step and each large-model
            pass serves all of them (a row then no longer decides exactly as it would alone;
            the exact mode stays exact). Without it each row is checked on its own schedule.
    """
    _check_number(
        "fallback_threshold",
        fallback_threshold,
        0,
        "the small model hands over "
        "when its top probability is below it; 0 never falls back, above 1 always does",
    )
    _check_number(
        "rollback_threshold",
        rollback_threshold,
        0,
        "the large model's cross-entropy "
        "above which a drafted token is replaced; 0 is the exact mode",
    )
    _check_count("max_small_steps", max_small_steps)
    return _decode(
        small,
        large,
        input_ids,
        attention_mask,
        max_new_tokens,
        Sampler(do_sample, temperature, top_k, top_p, seed, large.device),
        fallback_threshold=float(fallback_threshold),
        rollback_threshold=float(rollback_threshold),
        max_small_steps=max_small_steps,
        reference_compat=reference_compat,
        speculative=False,
        vocab_size=vocab_size,
        engine=engine,
        shared_checks=shared_checks,
    )


def speculative_generate(
    small: PreTrainedModel,
    large: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    *,
    gamma: int = 4,
    max_new_tokens: int = 128,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    vocab_size: int | None = None,
    engine: str = "auto",
) -> BiLDOutput:
    """Classic speculative decoding: `gamma` drafted tokens per large-model call, verified so
    that the output follows the large model's (greedy or sampling) distribution exactly.
    `out.stats.acceptance_rate` is accepted drafts / drafted tokens. `vocab_size`, `engine`:
    as in `bild_generate`."""
    _check_count("gamma", gamma)
    return _decode(
        small,
        large,
        input_ids,
        attention_mask,
        max_new_tokens,
        Sampler(do_sample, temperature, top_k, top_p, seed, large.device),
        fallback_threshold=0.0,
        rollback_threshold=0.0,
        max_small_steps=gamma,
        reference_compat=False,
        speculative=True,
        vocab_size=vocab_size,
        engine=engine,
    )


def autoregressive_generate(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 128,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    engine: str = "auto",
) -> BiLDOutput:
    """One model alone, one token per forward pass, through the same machinery as the two-model
    decoders: the fair baseline for timing them. `engine`: as in `bild_generate`."""
    # the one model takes the large model's place: it checks nothing, it only appends
    return _decode(
        None,
        model,
        input_ids,
        attention_mask,
        max_new_tokens,
        Sampler(do_sample, temperature, top_k, top_p, seed, model.device),
        engine=engine,
    )


def _decode(
    small, large, input_ids, attention_mask, max_new_tokens, sampler, shared_checks=False, **policy
):
    _check_count("max_new_tokens", max_new_tokens)
    if policy.get("vocab_size") is not None:
        _check_count("vocab_size", policy["vocab_size"])
    if policy.get("engine") not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)} (got {policy['engine']!r})")
    if small is not None:
        check_pair(small, large, policy["vocab_size"])
    input_ids, attention_mask = _check_inputs(input_ids, attention_mask)
    with torch.inference_mode():
        if input_ids.shape[0] == 1:
            return _decode_row(
                small, large, input_ids, attention_mask, max_new_tokens, sampler, policy
            )
        if _batches_together(small, large, policy):
            return _decode_together(
                small,
                large,
                input_ids,
                attention_mask,
                max_new_tokens,
                sampler,
                policy,
                shared_checks,
            )
        rows = [
            _decode_row(
                small,
                large,
                input_ids[index : index + 1],
                None if attention_mask is None else attention_mask[index : index + 1],
                max_new_tokens,
                sampler.for_row(index),
                policy,
            )
            for index in range(input_ids.shape[0])
        ]
        return _stack_rows(rows, large, input_ids)


def _decode_row(small, large, input_ids, attention_mask, max_new_tokens, sampler, policy):
    loop = _DecodeLoop(small, large, input_ids, attention_mask, max_new_tokens, sampler, **policy)
    return loop.run_alone() if small is None else loop.run()


def _batches_together(small, large, policy: dict) -> bool:
    """Whether a batch can run on `BatchLoop`: models with a lean step."""
    return (
        policy.get("engine") == "auto"
        and not policy.get("reference_compat", False)
        and lean.supports(large)
        and (small is None or lean.supports(small))
    )


def _prefixes(large, input_ids, attention_mask) -> list[list[int]]:
    """What each row's decoder is fed before its first new token: the decoder start token, or
    (decoder-only) the row's prompt without its padding, so a token's position is its slot."""
    if _is_encoder_decoder(large):
        return [[_special_tokens(large)[0]]] * input_ids.shape[0]
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    return [row[keep > 0].tolist() for row, keep in zip(input_ids, mask, strict=True)]


def _with_prompts(input_ids, new_tokens: list[torch.Tensor]) -> list[torch.Tensor]:
    """Decoder-only rows as `generate` returns them: the prompt as given (padding included),
    then the new tokens."""
    return [
        torch.cat((prompt.to(tokens.device), tokens))
        for prompt, tokens in zip(input_ids, new_tokens, strict=True)
    ]


def _decode_together(
    small, large, input_ids, attention_mask, max_new_tokens, sampler, policy, shared_checks=False
):
    prefixes = _prefixes(large, input_ids, attention_mask)
    longest = max(len(prefix) for prefix in prefixes)
    capacity = longest + max_new_tokens + policy.get("max_small_steps", 1) + 1  # + a filler
    decoders = [
        None if model is None else lean.lean_decoder(model, input_ids, attention_mask, capacity)
        for model in (small, large)
    ]
    loop = BatchLoop(
        decoders[0],
        decoders[1],
        prefixes=prefixes,
        forced_first=_forced_first(large),
        eos_ids=eos_token_ids(large),
        max_new_tokens=max_new_tokens,
        fallback_threshold=policy.get("fallback_threshold", 0.0),
        rollback_threshold=policy.get("rollback_threshold", 0.0),
        max_small_steps=policy.get("max_small_steps", 1),
        vocab_size=policy.get("vocab_size"),
        shared_checks=shared_checks,
        samplers=[sampler.for_row(index) for index in range(input_ids.shape[0])],
        speculative=policy.get("speculative", False),
    )
    rows = loop.run()
    if _is_encoder_decoder(large):
        pieces = [torch.tensor(row.tokens, device=large.device) for row in rows]
    else:
        new_tokens = [
            torch.tensor(row.tokens[row.prefix_length :], dtype=torch.long, device=large.device)
            for row in rows
        ]
        pieces = _with_prompts(input_ids, new_tokens)
    return _batch_output(
        pieces, large, [row.stats for row in rows], [row.from_small for row in rows]
    )


def _stack_rows(rows: list[BiLDOutput], large, input_ids) -> BiLDOutput:
    """One output for rows decoded one by one. Decoder-only rows keep their prompt as given
    (padding included, as `generate` returns it) before the new tokens."""
    if _is_encoder_decoder(large):
        pieces = [row.sequences[0] for row in rows]
    else:
        new_tokens = [
            row.sequences[0, row.sequences.shape[1] - row.stats.generated :] for row in rows
        ]
        pieces = _with_prompts(input_ids, new_tokens)
    return _batch_output(
        pieces, large, [row.stats for row in rows], [row.from_small for row in rows]
    )


def _batch_output(pieces: list[torch.Tensor], large, row_stats, from_small: list) -> BiLDOutput:
    """The rows' token sequences padded into one tensor (like `generate`), with the totals."""
    width = max(len(piece) for piece in pieces)
    sequences = torch.full(
        (len(pieces), width), pad_token_id(large), dtype=torch.long, device=pieces[0].device
    )
    for index, piece in enumerate(pieces):
        sequences[index, : len(piece)] = piece
    total = BiLDStats()
    for stats in row_stats:
        total += stats
    return BiLDOutput(sequences=sequences, stats=total, from_small=from_small, row_stats=row_stats)


# --- the loop ----------------------------------------------------------------------------------


class _DecodeLoop:
    """The decode loop of one call. `tokens` (host) mirrors `ids` (device); the last `pending`
    tokens were drafted by the small model and not yet checked by the large one."""

    def __init__(
        self,
        small: PreTrainedModel | None,
        large: PreTrainedModel,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        max_new_tokens: int,
        sampler: Sampler,
        *,
        fallback_threshold: float = 0.0,
        rollback_threshold: float = 0.0,
        max_small_steps: int = 1,
        reference_compat: bool = False,
        speculative: bool = False,
        vocab_size: int | None = None,
        engine: str = "auto",
    ) -> None:
        # the lean step's static cache holds the longest output (encoder-decoder: after the
        # start token; decoder-only: after the prompt)
        prefix_length = 1 if _is_encoder_decoder(large) else input_ids.shape[1]
        capacity = prefix_length + max_new_tokens if engine == "auto" else None
        self.large = DecoderState(large, input_ids, attention_mask, capacity)
        self.small = (
            None if small is None else DecoderState(small, input_ids, attention_mask, capacity)
        )
        self.sampler = sampler
        self.fallback_threshold = fallback_threshold
        self.rollback_threshold = rollback_threshold
        self.max_small_steps = max_small_steps
        self.max_new_tokens = max_new_tokens
        self.reference_compat = reference_compat
        self.speculative = speculative
        self.vocab_size = vocab_size  # None: every row of the output embeddings
        self.eos_ids = eos_token_ids(large)
        self.forced_first = _forced_first(large)
        (prefix,) = _prefixes(large, input_ids, attention_mask)
        self.prefix_length = len(prefix)
        self.ids = torch.empty(
            (1, len(prefix) + max_new_tokens), dtype=torch.long, device=self.large.device
        )
        self.ids[0, : len(prefix)] = torch.tensor(prefix)
        self.tokens = list(prefix)
        self.from_small: list[bool] = []
        self.pending = 0
        # the small model's sampling distributions of the pending tokens (speculative sampling)
        self.draft_distributions: list[torch.Tensor] = []
        self.stats = BiLDStats()

    # -- bookkeeping --

    def _append(self, token: int, from_small: bool) -> None:
        self.ids[0, len(self.tokens)] = token
        self.tokens.append(token)
        self.from_small.append(from_small)

    def _truncate(self, length: int) -> None:
        del self.tokens[length:]
        del self.from_small[length - self.prefix_length :]

    @property
    def _generated(self) -> int:
        return len(self.tokens) - self.prefix_length

    @property
    def _full(self) -> bool:
        return self._generated >= self.max_new_tokens

    def _unfed(self, state: DecoderState) -> torch.LongTensor:
        return self.ids[:, state.length : len(self.tokens)]

    def _output(self) -> BiLDOutput:
        self.stats.generated = self._generated
        return BiLDOutput(
            sequences=self.ids[:, : len(self.tokens)].clone(),
            stats=self.stats,
            from_small=list(self.from_small),
            row_stats=[self.stats],
        )

    # -- model steps --

    def _small_step(self) -> tuple[int, float]:
        """Run the small model over what it has not seen; return its choice and top prob."""
        self.stats.small_steps += 1
        # on the large model's device, where the sampler's generator and the distributions live
        logits = self.small.feed(self._unfed(self.small), keep_last=1)[-1, : self.vocab_size]
        logits = logits.to(self.large.device)
        probabilities = self.sampler.distribution(logits)
        top_probability = probabilities.max(-1).values
        token = self.sampler.choose(probabilities)
        if self.speculative and self.sampler.do_sample:
            self.draft_distributions.append(probabilities)
        probability, token = torch.stack((top_probability, token.float())).tolist()
        return int(token), probability

    def _large_logits(self) -> torch.Tensor:
        """The large model's logits at each pending position plus one (for the next token)."""
        self.stats.large_calls += 1
        unfed = self._unfed(self.large)
        logits = self.large.feed(unfed, keep_last=self.pending + 1)[:, : self.vocab_size]
        logits = logits.float()
        if self.forced_first is not None and self._generated == 0:
            logits[-1] = torch.full_like(logits[-1], -math.inf)
            logits[-1, self.forced_first] = 0.0
        return logits

    def _large_choices(self, logits: torch.Tensor) -> tuple[list[float], list[int]]:
        """Cross-entropy of each pending token, and the large model's choice at each position."""
        drafted = self.ids[0, len(self.tokens) - self.pending : len(self.tokens)]
        return large_check(self.sampler, logits, drafted)

    # -- phases --

    def _draft(self) -> None:
        """Small model drafts until it falls back, hits the step cap, EOS or the length limit."""
        for _ in range(self.max_small_steps):
            if self._full:
                return
            token, probability = self._small_step()
            if falls_back(probability, self.fallback_threshold):
                self.stats.fallbacks += 1
                return
            self._append(token, from_small=True)
            self.pending += 1
            if token in self.eos_ids:
                return

    def _accept_large_token(self, token: int) -> bool:
        """Append the large model's token; True when decoding is over."""
        self._append(token, from_small=False)
        self.stats.large_tokens += 1
        return token in self.eos_ids or self._full

    def _large_appends(self) -> bool:
        _, choices = self._large_choices(self._large_logits())
        return self._accept_large_token(choices[-1])

    def _check_and_continue(self) -> bool:
        """Large model checks the pending drafts, then rolls back or appends; True when done."""
        drafted = self.tokens[len(self.tokens) - self.pending :]
        ended_on_draft = self.pending > 0 and (self.tokens[-1] in self.eos_ids or self._full)
        logits = self._large_logits()
        if self.speculative and self.sampler.do_sample:
            target = self.sampler.distribution(logits)
            index, replacement = speculative_verdict(
                self.sampler, target, drafted, self.draft_distributions
            )
        else:
            nll, choices = self._large_choices(logits)
            index = rollback_index(
                drafted, nll, choices[:-1], self.rollback_threshold, self.reference_compat
            )
            replacement = choices[-1] if index is None else choices[index]
        self.draft_distributions.clear()
        if index is None:
            self.stats.small_accepted += self.pending
            self.pending = 0
            return ended_on_draft or self._accept_large_token(replacement)

        self.stats.rollbacks += 1
        self.stats.small_accepted += index
        self.stats.rolled_back += self.pending - index
        keep = len(self.tokens) - self.pending + index
        self.pending = 0
        self._truncate(keep)
        self.large.crop(keep)
        self.small.crop(keep)
        correction_ends = self._accept_large_token(replacement)
        if correction_ends and not (self.reference_compat and not self._full):
            return True
        if self.speculative or not self.reference_compat:
            return False  # the correction is this call's one new token; drafting resumes
        # The original also has the large model produce the token after its correction.
        return self._large_appends()

    def run(self) -> BiLDOutput:
        if self.reference_compat:
            done = self._large_appends()  # the original starts with a large-model token
        elif self.forced_first is not None:
            done = self._accept_large_token(self.forced_first)  # known without a forward pass
        else:
            done = False  # the small model drafts from the first token on
        while not done:
            self._draft()
            ends_unchecked = self.pending and (self.tokens[-1] in self.eos_ids or self._full)
            if self.reference_compat and ends_unchecked:
                # The original stops on a drafted EOS (or the length limit) without a check.
                self.stats.small_accepted += self.pending
                break
            done = self._check_and_continue()
        return self._output()

    def run_alone(self) -> BiLDOutput:
        """The large model alone, one token per call (the autoregressive baseline)."""
        done = False
        while not done:
            done = self._large_appends()
        return self._output()
