"""Big Little Decoder (BiLD), greedy: the small model drafts, the large one checks and corrects.

    from bild_align import bild_generate
    out = bild_generate(small, large, input_ids, fallback_threshold=0.6, rollback_threshold=2.0)
    out.sequences                    # (1, 1 + new tokens): decoder start token, then the output
    out.stats.large_calls_per_token  # exact counts and derived rates, see `BiLDStats`

Token ids in, token ids and counts out: no tokenizer, no timing, no I/O. The two policies are
small pure functions (`falls_back`, `rollback_index`) so that they can be read and tested alone;
`bild_generate` validates its arguments and `_BiLDLoop` drives the two models.

With `rollback_threshold=0` the output equals the large model's greedy output (every small
token is checked against the large model's argmax); with `fallback_threshold > 1` the small
model never contributes a token, so the output is again the large model's greedy output.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from transformers import PreTrainedModel

from bild_align.cache import DecoderState


@dataclass
class BiLDStats:
    """Exact counts for one `bild_generate` call, plus rates derived from them."""

    small_steps: int = 0  # forward passes of the small model (fallback steps included)
    large_calls: int = 0  # forward passes of the large model
    fallbacks: int = 0  # small steps whose top probability was below the fallback threshold
    rollbacks: int = 0  # large-model checks that rejected a drafted token
    small_accepted: int = 0  # small-model tokens kept in the output
    rolled_back: int = 0  # drafted tokens discarded by rollbacks
    large_tokens: int = 0  # output tokens chosen by the large model
    generated: int = 0  # new tokens in the output (= small_accepted + large_tokens)

    @property
    def large_calls_per_token(self) -> float:
        return self.large_calls / self.generated if self.generated else 0.0

    @property
    def fallback_rate(self) -> float:
        """Share of small steps that fell back."""
        return self.fallbacks / self.small_steps if self.small_steps else 0.0

    @property
    def rollback_rate(self) -> float:
        """Share of drafted tokens that were rolled back."""
        drafted = self.small_accepted + self.rolled_back
        return self.rolled_back / drafted if drafted else 0.0

    @property
    def small_token_share(self) -> float:
        """Share of output tokens that come from the small model."""
        return self.small_accepted / self.generated if self.generated else 0.0

    @property
    def accepted_per_large_call(self) -> float:
        return self.small_accepted / self.large_calls if self.large_calls else 0.0

    def as_dict(self) -> dict[str, float]:
        derived = (
            "large_calls_per_token",
            "fallback_rate",
            "rollback_rate",
            "small_token_share",
            "accepted_per_large_call",
        )
        return {**asdict(self), **{name: getattr(self, name) for name in derived}}

    def __iadd__(self, other: BiLDStats) -> BiLDStats:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)
        return self


@dataclass
class BiLDOutput:
    sequences: torch.LongTensor  # (1, 1 + generated): decoder start token, then new tokens
    stats: BiLDStats
    from_small: list[bool] = field(default_factory=list)  # per new token: drafted by small?


# --- the two policies --------------------------------------------------------------------------


def falls_back(top_probability: float, fallback_threshold: float) -> bool:
    """Fallback policy: the small model hands over when it is not confident enough."""
    return top_probability < fallback_threshold


def rollback_index(
    drafted: Sequence[int],
    large_nll: Sequence[float],
    large_argmax: Sequence[int],
    rollback_threshold: float,
    reference_compat: bool = False,
) -> int | None:
    """Rollback policy: index of the first drafted token the large model rejects, or None.

    A drafted token is rejected when the large model's cross-entropy of it exceeds the threshold
    and the large model would have chosen another token. The original implementation looks only
    at the first token above the threshold and keeps everything if the large model agrees there
    (`reference_compat=True`).
    """
    for index, (token, nll, best) in enumerate(zip(drafted, large_nll, large_argmax, strict=True)):
        if nll > rollback_threshold:
            if best != token:
                return index
            if reference_compat:
                return None
    return None


# --- validation --------------------------------------------------------------------------------


def _special_tokens(model: PreTrainedModel) -> tuple[int, frozenset[int], int | None]:
    config, generation = model.config, model.generation_config
    start = generation.decoder_start_token_id
    if start is None:
        start = config.decoder_start_token_id
    eos = generation.eos_token_id if generation.eos_token_id is not None else config.eos_token_id
    eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
    return start, eos_ids, getattr(generation, "forced_bos_token_id", None)


def _check_pair(small: PreTrainedModel, large: PreTrainedModel) -> None:
    for role, model in (("small", small), ("large", large)):
        if not getattr(model.config, "is_encoder_decoder", False):
            raise ValueError(
                f"bild_generate needs encoder-decoder models (T5, mT5, BART, ...), but the {role} "
                f"model is a decoder-only {type(model).__name__}. Load it with "
                "AutoModelForSeq2SeqLM, or pass an encoder-decoder checkpoint."
            )
    small_vocab = small.get_output_embeddings().weight.shape[0]
    large_vocab = large.get_output_embeddings().weight.shape[0]
    if small_vocab != large_vocab:
        raise ValueError(
            f"The models' vocabularies differ (small: {small_vocab} tokens, large: "
            f"{large_vocab}). BiLD compares token ids, so both models must share one tokenizer."
        )
    if _special_tokens(small) != _special_tokens(large):
        raise ValueError(
            "The models' special tokens differ (decoder start, EOS or forced BOS): small "
            f"{_special_tokens(small)}, large {_special_tokens(large)}. Use a pair trained with "
            "the same tokenizer, or set the small model's generation_config to match the large."
        )
    if _special_tokens(large)[0] is None:
        raise ValueError(
            "The large model has no decoder_start_token_id; set "
            "large.generation_config.decoder_start_token_id."
        )


def _check_settings(
    fallback_threshold: float,
    rollback_threshold: float,
    max_small_steps: int,
    max_new_tokens: int,
) -> None:
    if not (isinstance(fallback_threshold, numbers.Real) and fallback_threshold >= 0):
        raise ValueError(
            f"fallback_threshold must be a number >= 0 (got {fallback_threshold!r}): the small "
            "model hands over when its top probability is below it; 0 never falls back, "
            "anything above 1 always does."
        )
    if not (isinstance(rollback_threshold, numbers.Real) and rollback_threshold >= 0):
        raise ValueError(
            f"rollback_threshold must be a number >= 0 (got {rollback_threshold!r}): the large "
            "model's cross-entropy above which a drafted token is replaced; 0 is the exact mode "
            "(output equals the large model's greedy output)."
        )
    for name, value in (("max_small_steps", max_small_steps), ("max_new_tokens", max_new_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (got {value!r}).")


def _check_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
        attention_mask = None if attention_mask is None else attention_mask.reshape(1, -1)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (1, length); got {tuple(input_ids.shape)}.")
    if input_ids.shape[0] != 1:
        raise ValueError(
            f"bild_generate decodes one input at a time (batch size 1), got a batch of "
            f"{input_ids.shape[0]}. Call it once per row, e.g. `for row in input_ids: "
            "bild_generate(small, large, row[None])`."
        )
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: give the encoder at least one token.")
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                f"{tuple(input_ids.shape)}; they must match."
            )
        if not bool(attention_mask.any()):
            raise ValueError("attention_mask masks every input token: the input is empty.")
    return input_ids, attention_mask


# --- the decoder -------------------------------------------------------------------------------


def bild_generate(
    small: PreTrainedModel,
    large: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    *,
    fallback_threshold: float = 0.6,
    rollback_threshold: float = 5.0,
    max_small_steps: int = 10,
    max_new_tokens: int = 128,
    reference_compat: bool = False,
) -> BiLDOutput:
    """Greedy Big Little Decoding of one input with an encoder-decoder pair.

    Args:
        small, large: encoder-decoder models sharing a vocabulary and special tokens, in eval
            mode (dropout would make the output random).
        input_ids, attention_mask: the encoder input, shape (1, length) (or (length,)).
        fallback_threshold: the small model hands control to the large one when its top
            probability is below this (0: never; above 1: always, i.e. large-only decoding).
        rollback_threshold: the large model replaces a drafted token when its cross-entropy of
            that token exceeds this and its own argmax differs (0: exact greedy decoding).
        max_small_steps: most consecutive small-model tokens before the large model checks.
        max_new_tokens: most tokens generated after the decoder start token.
        reference_compat: reproduce the original implementation's decisions (no check of the
            drafted tail at the end, its rollback rule, decoding on past an EOS produced by a
            rollback) to reproduce the paper's numbers token for token.

    Returns:
        `BiLDOutput` with `sequences` (decoder start token followed by the new tokens, as
        `generate` returns them for encoder-decoder models) and `stats`.
    """
    _check_settings(fallback_threshold, rollback_threshold, max_small_steps, max_new_tokens)
    _check_pair(small, large)
    input_ids, attention_mask = _check_inputs(input_ids, attention_mask)
    with torch.inference_mode():
        loop = _BiLDLoop(
            DecoderState(small, input_ids, attention_mask),
            DecoderState(large, input_ids, attention_mask),
            fallback_threshold=float(fallback_threshold),
            rollback_threshold=float(rollback_threshold),
            max_small_steps=max_small_steps,
            max_new_tokens=max_new_tokens,
            reference_compat=reference_compat,
            special_tokens=_special_tokens(large),
        )
        return loop.run()


class _BiLDLoop:
    """The decode loop of one call. `tokens` (host) mirrors `ids` (device); the last `pending`
    tokens were drafted by the small model and not yet checked by the large one."""

    def __init__(
        self,
        small: DecoderState,
        large: DecoderState,
        *,
        fallback_threshold: float,
        rollback_threshold: float,
        max_small_steps: int,
        max_new_tokens: int,
        reference_compat: bool,
        special_tokens: tuple[int, frozenset[int], int | None],
    ) -> None:
        self.small, self.large = small, large
        self.fallback_threshold = fallback_threshold
        self.rollback_threshold = rollback_threshold
        self.max_small_steps = max_small_steps
        self.max_new_tokens = max_new_tokens
        self.reference_compat = reference_compat
        start, self.eos_ids, self.forced_first = special_tokens
        self.ids = torch.empty((1, 1 + max_new_tokens), dtype=torch.long, device=large.device)
        self.ids[0, 0] = start
        self.tokens = [start]
        self.from_small: list[bool] = []
        self.pending = 0
        self.stats = BiLDStats()

    # -- bookkeeping --

    def _append(self, token: int, from_small: bool) -> None:
        self.ids[0, len(self.tokens)] = token
        self.tokens.append(token)
        self.from_small.append(from_small)

    def _truncate(self, length: int) -> None:
        del self.tokens[length:]
        del self.from_small[length - 1 :]

    @property
    def _generated(self) -> int:
        return len(self.tokens) - 1

    @property
    def _full(self) -> bool:
        return self._generated >= self.max_new_tokens

    def _unfed(self, state: DecoderState) -> torch.LongTensor:
        return self.ids[:, state.length : len(self.tokens)]

    # -- model steps --

    def _small_step(self) -> tuple[int, float]:
        """Run the small model over what it has not seen; return its argmax and top prob."""
        self.stats.small_steps += 1
        logits = self.small.feed(self._unfed(self.small))[-1].float()
        top_logit, top_token = logits.max(-1)
        top_probability = torch.exp(top_logit - torch.logsumexp(logits, -1))
        probability, token = torch.stack((top_probability, top_token.float())).tolist()
        return int(token), probability

    def _large_step(self) -> tuple[list[float], list[int]]:
        """Run the large model over what it has not seen (the pending drafts among it).

        Returns the large model's cross-entropy of each pending token and its argmax at each
        pending position plus one (the token it would append after the last one).
        """
        self.stats.large_calls += 1
        logits = self.large.feed(self._unfed(self.large))[-self.pending - 1 :].float()
        if self.forced_first is not None and len(self.tokens) == 1:
            logits[-1] = torch.full_like(logits[-1], -math.inf)
            logits[-1, self.forced_first] = 0.0
        argmax = logits.argmax(-1)
        if not self.pending:
            return [], [int(argmax.item())]
        drafted = self.ids[0, len(self.tokens) - self.pending : len(self.tokens)]
        log_probs = torch.log_softmax(logits[:-1], dim=-1)
        nll = -log_probs.gather(-1, drafted.to(logits.device)[:, None])[:, 0]
        both = torch.cat((nll, argmax.float())).tolist()
        return both[: self.pending], [int(token) for token in both[self.pending :]]

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

    def _large_appends(self) -> bool:
        """Large model produces one token of its own; True when decoding is over."""
        _, argmax = self._large_step()
        return self._accept_large_token(argmax[-1])

    def _accept_large_token(self, token: int) -> bool:
        self._append(token, from_small=False)
        self.stats.large_tokens += 1
        return token in self.eos_ids or self._full

    def _check_and_continue(self) -> bool:
        """Large model checks the pending drafts, then rolls back or appends; True when done."""
        drafted = self.tokens[len(self.tokens) - self.pending :]
        ended_on_draft = self.pending > 0 and (self.tokens[-1] in self.eos_ids or self._full)
        nll, argmax = self._large_step()
        index = rollback_index(
            drafted, nll, argmax[:-1], self.rollback_threshold, self.reference_compat
        )
        if index is None:
            self.stats.small_accepted += self.pending
            self.pending = 0
            return ended_on_draft or self._accept_large_token(argmax[-1])

        self.stats.rollbacks += 1
        self.stats.small_accepted += index
        self.stats.rolled_back += self.pending - index
        keep = len(self.tokens) - self.pending + index
        self.pending = 0
        self._truncate(keep)
        self.large.crop(keep)
        self.small.crop(keep)
        correction_ends = self._accept_large_token(argmax[index])
        if correction_ends and not (self.reference_compat and not self._full):
            return True
        # As in the original: the large model also produces the token after its correction.
        return self._large_appends()

    def run(self) -> BiLDOutput:
        done = self._large_appends()
        while not done:
            self._draft()
            ends_unchecked = self.pending and (self.tokens[-1] in self.eos_ids or self._full)
            if self.reference_compat and ends_unchecked:
                # The original stops on a drafted EOS (or the length limit) without a check.
                self.stats.small_accepted += self.pending
                break
            done = self._check_and_continue()
        self.stats.generated = self._generated
        return BiLDOutput(
            sequences=self.ids[:, : len(self.tokens)].clone(),
            stats=self.stats,
            from_small=list(self.from_small),
        )
