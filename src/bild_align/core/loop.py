"""The one decode loop: BiLD, speculative and autoregressive decoding of one row or a batch.

    out = decode(small, large, input_ids, mask, BiLDPolicy(), Sampler(), max_new_tokens=64)
    out = decode(None, large, input_ids, mask, BiLDPolicy(), Sampler(), max_new_tokens=64)
    out.sequences, out.stats, out.row_stats[i], out.from_small[i]

Every model is driven through one step contract (`step(new_ids, starts, rows, keep)`): the lean
steps (`lean`) where a model has one, else transformers' forward (`cache.TransformersDecoder`).
Each row drafts, falls back, is checked and rolled back on its own; the loop only groups the
work: each round, one small-model step for every row that is drafting, then one large-model
pass for every row that waits for a check. With no small model, every row waits each round
(the large model appends). A rollback is a smaller start for the row's next write. A batch row
makes exactly the decisions it makes alone (sampled: row i draws from `sampler.for_row(i)`).

With `shared_checks=True`, every row holding drafts joins a check that one row needs: the rows
stay in step and each large-model pass serves all of them, at the price of checks a row alone
would not have had (the exact mode stays exact; other settings decide slightly differently).
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from enum import Enum
from itertools import accumulate

import torch
from transformers import PreTrainedModel

from bild_align.core.checks import (
    check_count,
    check_inputs,
    check_pair,
    eos_token_ids,
    forced_first,
    is_encoder_decoder,
    pad_token_id,
    prefixes,
)
from bild_align.core.engines import lean
from bild_align.core.engines.hf_forward import TransformersDecoder
from bild_align.core.engines.shared_encoder import encoder_passes_shared
from bild_align.core.policies import BiLDPolicy
from bild_align.core.sampling import Sampler, confidence, speculative_verdict
from bild_align.core.stats import BiLDOutput, BiLDStats

ENGINES = ("auto", "transformers")
# An observer of every model step (`before()`, `after()`), for timing instrumentation
# (`bild_align.measure.timing.ForwardClock`); a context variable, seen only where it is set.
STEP_OBSERVER: ContextVar = ContextVar("bild_align_step_observer", default=None)
FILLER = 0  # the id fed after a shorter row's tokens in a step; masked out, never read


class Phase(Enum):
    """What a row waits for: the small model's next step, a large-model check, or nothing."""

    DRAFTING = "drafting"
    WAITING = "waiting for a check"
    FINISHED = "finished"


@dataclass
class Row:
    """One row's decoding: its decoder tokens (prefix first), what produced them, and where
    it stands. Its tokens change only through the methods below."""

    tokens: list[int]
    sampler: Sampler
    prefix_length: int = 1
    from_small: list[bool] = field(default_factory=list)
    stats: BiLDStats = field(default_factory=BiLDStats)
    pending: int = 0  # drafted tokens not yet checked
    round_steps: int = 0  # small-model steps since the last check
    small_length: int = 0  # tokens in the small model's cache
    large_length: int = 0  # tokens in the large model's cache
    phase: Phase = Phase.DRAFTING
    # the small model's sampling distributions of the pending tokens (speculative sampling)
    draft_distributions: list[torch.Tensor] = field(default_factory=list)

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prefix_length

    @property
    def drafted(self) -> list[int]:
        return self.tokens[len(self.tokens) - self.pending :]

    def add_draft(self, token: int) -> None:
        self.tokens.append(token)
        self.from_small.append(True)
        self.pending += 1

    def add_large_token(self, token: int) -> None:
        """The large model's token, after the kept drafts; a new drafting round begins."""
        self.tokens.append(token)
        self.from_small.append(False)
        self.stats.large_tokens += 1
        self.round_steps = 0

    def accept(self) -> None:
        """Every pending draft is kept."""
        self.stats.small_accepted += self.pending
        self.pending = 0

    def roll_back(self, index: int) -> None:
        """Keep the pending drafts before `index`; the rest leave the tokens and both caches."""
        self.stats.rollbacks += 1
        self.stats.small_accepted += index
        self.stats.rolled_back += self.pending - index
        keep = len(self.tokens) - self.pending + index
        self.pending = 0
        del self.tokens[keep:]
        del self.from_small[keep - self.prefix_length :]
        self.large_length = min(self.large_length, keep)
        self.small_length = min(self.small_length, keep)


def decode(
    small: PreTrainedModel | None,
    large: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    policy: BiLDPolicy,
    sampler: Sampler,
    *,
    max_new_tokens: int,
    vocab_size: int | None = None,
    engine: str = "auto",
    shared_checks: bool = False,
) -> BiLDOutput:
    """Check the arguments (a ValueError says what to do), then decode; `small=None` decodes
    with the large model alone."""
    check_count("max_new_tokens", max_new_tokens)
    if vocab_size is not None:
        check_count("vocab_size", vocab_size)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)} (got {engine!r})")
    if small is not None:
        check_pair(small, large, vocab_size)
    input_ids, attention_mask = check_inputs(input_ids, attention_mask)
    with torch.inference_mode():
        row_prefixes = prefixes(large, input_ids, attention_mask)
        # a row's step is padded to the widest row's, past its own end: room for one round, and
        # for a whole prompt (a row's first check feeds it to the large model with the drafts)
        longest = max(map(len, row_prefixes))
        widest = longest + policy.max_small_steps + 1
        capacity = (longest if len(row_prefixes) > 1 else 0) + max_new_tokens + widest
        with encoder_passes_shared():  # a drafter sharing the large encoder: one pass
            steppers = [
                None
                if model is None
                else _stepper(model, input_ids, attention_mask, capacity, engine)
                for model in (small, large)
            ]
        if policy.fallback_head is not None and small is not None:
            steppers[0].capture_hidden = True  # transformers' forward keeps it only when asked
            policy = replace(policy, fallback_head=policy.fallback_head.to(large.device))
        large_first = small is None or policy.schedule.large_first
        rows = [
            Row(
                tokens=list(prefix),
                sampler=sampler.for_row(index),
                prefix_length=len(prefix),
                phase=Phase.WAITING if large_first else Phase.DRAFTING,
            )
            for index, prefix in enumerate(row_prefixes)
        ]
        loop = DecodeLoop(
            small=steppers[0],
            large=steppers[1],
            policy=policy,
            rows=rows,
            eos_ids=eos_token_ids(large),
            max_new_tokens=max_new_tokens,
            forced_first=forced_first(large),
            vocab_size=vocab_size,
            shared_checks=shared_checks,
        )
        return _output(loop.run(), large, input_ids)


def _stepper(model, input_ids, attention_mask, capacity: int, engine: str):
    decoder = None
    if engine == "auto":
        decoder = lean.lean_decoder(model, input_ids, attention_mask, capacity)
    return decoder or TransformersDecoder(model, input_ids, attention_mask)


def _output(rows: list[Row], large: PreTrainedModel, input_ids: torch.LongTensor) -> BiLDOutput:
    """The rows' sequences padded into one tensor like `generate`'s: encoder-decoder rows are
    the start token and the new tokens; decoder-only rows the prompt as given (padding
    included), then the new tokens."""
    pieces = [torch.tensor(row.tokens, dtype=torch.long) for row in rows]
    if not is_encoder_decoder(large):
        pieces = [
            torch.cat((prompt.cpu(), piece[row.prefix_length :]))
            for prompt, piece, row in zip(input_ids, pieces, rows, strict=True)
        ]
    sequences = torch.full((len(rows), max(map(len, pieces))), pad_token_id(large))
    for index, piece in enumerate(pieces):
        sequences[index, : len(piece)] = piece
    total = BiLDStats()
    for row in rows:
        row.stats.generated = row.generated
        total += row.stats
    return BiLDOutput(
        sequences=sequences.to(large.device),
        stats=total,
        from_small=[row.from_small for row in rows],
        row_stats=[row.stats for row in rows],
    )


def _observed(step, *args, **kwargs) -> torch.Tensor:
    observer = STEP_OBSERVER.get()
    if observer is None:
        return step(*args, **kwargs)
    observer.before()
    try:
        return step(*args, **kwargs)
    finally:
        observer.after()


@dataclass(kw_only=True)
class DecodeLoop:
    """One decoding call's state (see the module docstring): the two models' steppers (the
    lean steps' contract; `small` None: the large model alone), the policy and the rows."""

    small: object | None
    large: object
    policy: BiLDPolicy
    rows: list[Row]
    eos_ids: frozenset[int]
    max_new_tokens: int
    forced_first: int | None = None  # a first token the large model's config forces
    vocab_size: int | None = None  # the ids the pair shares, when the logits hold more
    shared_checks: bool = False

    def __post_init__(self) -> None:
        self.sampled = self.rows[0].sampler.do_sample
        if self.forced_first is not None and self.rows[0].phase == Phase.DRAFTING:
            for row in self.rows:  # the small model drafts after it: known without a forward pass
                self._append_large_token(row, self.forced_first)

    def run(self) -> list[Row]:
        while True:
            drafting = [i for i, row in enumerate(self.rows) if row.phase == Phase.DRAFTING]
            if drafting:
                self._small_step(drafting)
            waiting = [i for i, row in enumerate(self.rows) if row.phase == Phase.WAITING]
            if waiting and self.shared_checks:  # every row with drafts joins the check
                waiting = [
                    i
                    for i, row in enumerate(self.rows)
                    if row.phase == Phase.WAITING or (row.phase == Phase.DRAFTING and row.pending)
                ]
            if waiting:
                self._large_step(waiting)
            if not drafting and not waiting:
                return self.rows

    # -- bookkeeping --

    def _ends(self, row: Row) -> bool:
        return row.tokens[-1] in self.eos_ids or row.generated >= self.max_new_tokens

    def _append_large_token(self, row: Row, token: int, eos_ends: bool = True) -> None:
        row.add_large_token(token)
        full = row.generated >= self.max_new_tokens
        if full or (eos_ends and token in self.eos_ids):
            row.phase = Phase.FINISHED
        else:
            row.phase = Phase.DRAFTING if self.small is not None else Phase.WAITING

    def _feed(self, stepper, indices: list[int], fed: list[int], read: list[int]) -> torch.Tensor:
        """Run `stepper` on each listed row's unfed tokens (from its cached length `fed[i]`);
        return the logits at each row's last `read[i]` tokens, (sum of read, vocab) in row
        order (the output layer runs there only)."""
        device = stepper.device
        if len(indices) == 1:  # one row: no padding, and the int forms the steps take fastest
            (index,), (start,), (count,) = indices, fed, read
            new_ids = torch.tensor([self.rows[index].tokens[start:]], device=device)
            rows = None if stepper.batch_size == 1 else torch.tensor(indices, device=device)
            logits = _observed(stepper.step, new_ids, start, rows, keep=count)[0]
            return logits[:, : self.vocab_size]
        chunks = [
            self.rows[index].tokens[start:] for index, start in zip(indices, fed, strict=True)
        ]
        width = max(map(len, chunks))
        new_ids = torch.tensor([chunk + [FILLER] * (width - len(chunk)) for chunk in chunks])
        ends = torch.tensor(list(map(len, chunks)))[:, None]
        columns = torch.arange(width)
        keep = (columns >= ends - torch.tensor(read)[:, None]) & (columns < ends)
        rows = None if len(indices) == stepper.batch_size else torch.tensor(indices, device=device)
        starts = torch.tensor(fed, device=device)
        logits = _observed(stepper.step, new_ids.to(device), starts, rows, keep=keep.to(device))
        return logits[:, : self.vocab_size]

    # -- the two model steps --

    def _small_step(self, indices: list[int]) -> None:
        fed = [self.rows[index].small_length for index in indices]
        last = self._feed(self.small, indices, fed, [1] * len(indices))
        # the rows share their sampling settings, not their draws; the samplers' generators
        # (and a learned fallback head) live on the large model's device
        probabilities = self.rows[indices[0]].sampler.distribution(last.to(self.large.device))
        if self.sampled:
            tokens = [
                self.rows[index].sampler.choose(probabilities[place])
                for place, index in enumerate(indices)
            ]
            tokens = torch.stack(tokens)
        else:
            tokens = probabilities.argmax(-1)
        # one transfer: float64 holds every token id exactly (up to 2**53)
        tops, tokens = torch.stack((self._confidence(probabilities).double(), tokens.double()))
        tops, tokens = tops.tolist(), tokens.tolist()
        for place, index in enumerate(indices):
            row = self.rows[index]
            row.small_length = len(row.tokens)
            row.stats.small_steps += 1
            row.round_steps += 1
            if self.policy.schedule.lossless_sampling and self.sampled:
                row.draft_distributions.append(probabilities[place])
            if self.policy.falls_back(tops[place]):
                row.stats.fallbacks += 1
                row.phase = Phase.WAITING
                continue
            row.add_draft(int(tokens[place]))
            if self._ends(row) and self.policy.schedule.unchecked_final_drafts:
                row.accept()  # the original stops unchecked
                row.phase = Phase.FINISHED
            elif self._ends(row) or row.round_steps >= self.policy.max_small_steps:
                row.phase = Phase.WAITING

    def _confidence(self, probabilities: torch.Tensor) -> torch.Tensor:
        """What the fallback compares with its threshold, one value per row."""
        if self.policy.fallback_rule != "learned":
            return confidence(probabilities, self.policy.fallback_rule)
        hidden = self.small.last_hidden
        hidden = hidden.reshape(-1, hidden.shape[-1]).to(probabilities.device)
        return self.policy.fallback_head(hidden, probabilities)

    def _large_step(self, indices: list[int]) -> None:
        # each row reads the position before its first draft, and one per draft
        rows = [self.rows[index] for index in indices]
        fed, read = [row.large_length for row in rows], [row.pending + 1 for row in rows]
        logits = self._feed(self.large, indices, fed, read).float()
        spans = [(end - count, end) for count, end in zip(read, accumulate(read), strict=True)]
        if self.forced_first is not None:  # a first token the large model must produce
            for row, (_, end) in zip(rows, spans, strict=True):
                if row.generated == 0:
                    logits[end - 1] = -math.inf
                    logits[end - 1, self.forced_first] = 0.0
        if self.policy.schedule.lossless_sampling and self.sampled:
            for row, (start, end) in zip(rows, spans, strict=True):
                target = row.sampler.distribution(logits[start:end])
                verdict = speculative_verdict(
                    row.sampler, target, row.drafted, row.draft_distributions
                )
                row.draft_distributions.clear()
                self._verdict(row, *verdict)
            return
        # every row's cross-entropies of its drafts, and the large model's choices (draws when
        # sampling: each row with its own sampler, in the order a row alone draws), one transfer
        following = [token for row in rows for token in row.drafted + [FILLER]]
        log_probs = rows[0].sampler.log_distribution(logits)
        nll = -log_probs.gather(-1, torch.tensor(following, device=logits.device)[:, None])
        if self.sampled:
            choices = [
                row.sampler.choose(row.sampler.distribution(logits[start:end]))
                for row, (start, end) in zip(rows, spans, strict=True)
            ]
            choices = torch.cat(choices)
        else:
            choices = log_probs.argmax(-1)
        nll, choices = torch.stack((nll[:, 0].double(), choices.double())).tolist()  # exact ids
        for row, (start, end) in zip(rows, spans, strict=True):
            # the last position read predicts a token after the drafts: it has no cross-entropy
            rejected = self.policy.rejected(
                row.drafted, nll[start : end - 1], choices[start : end - 1]
            )
            token = choices[end - 1 if rejected is None else start + rejected]
            self._verdict(row, rejected, int(token))

    def _verdict(self, row: Row, index: int | None, token: int) -> None:
        """Keep the drafts before `index` (all of them when None), then the large model's
        `token`: after the kept drafts, or in place of the first rejected one."""
        row.stats.large_calls += 1
        row.large_length = len(row.tokens)
        if index is None:
            ended_on_draft = row.pending > 0 and self._ends(row)
            row.accept()
            if ended_on_draft:
                row.phase = Phase.FINISHED
            else:
                self._append_large_token(row, token)
            return
        row.roll_back(index)
        after = self.policy.schedule.large_after_correction
        self._append_large_token(row, token, eos_ends=not after)
        if after and row.phase != Phase.FINISHED:
            row.phase = Phase.WAITING  # the large model also produces the next token
