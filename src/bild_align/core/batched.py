"""BiLD, speculative and autoregressive decoding of a batch, each row on its own course.

    loop = BatchLoop(small_decoder, large_decoder, prefixes=[[0]] * 8, forced_first=None,
                     eos_ids={1}, max_new_tokens=64, fallback_threshold=0.6,
                     rollback_threshold=2.0, max_small_steps=10, vocab_size=None)
    rows = loop.run()            # one `RowResult` per input row: tokens, from_small, stats
    samplers = [Sampler(do_sample=True, seed=0).for_row(i) for i in range(8)]
    loop = BatchLoop(..., samplers=samplers, speculative=True)   # sampled, row by row draws

A row's prefix is what its decoder is fed before the first new token: the decoder start token
(encoder-decoder models) or the row's prompt without its padding (decoder-only models).

Every row makes exactly the decisions the one-row loop (`decoding._DecodeLoop`) makes for it
alone (sampled, each row draws from its own generator in the one-row loop's order): it
drafts, falls back, is checked and rolled back on its own. The loop only groups the work:
each round, one small-model step for every row that is drafting, then one large-model pass
for every row that waits for a check (with no small model, every row is checked, i.e. the
large model appends, each round). A rollback in one row is a position move in that row's
cache (`lean.LeanDecoder`); the other rows do not notice it. Finished rows cost nothing.

With `shared_checks=True`, every row holding drafts joins a check that one row needs: the rows
stay in step and each large-model pass serves all of them, at the price of checks a row alone
would not have had (the exact mode stays exact; other settings decide slightly differently).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import torch

from bild_align.core.lean import LeanDecoder
from bild_align.core.policies import falls_back, rollback_index
from bild_align.core.sampling import Sampler, large_check, speculative_verdict
from bild_align.core.stats import BiLDStats

DRAFTING, WAITING, FINISHED = "drafting", "waiting for a check", "finished"
FILLER = 0  # the id fed after a shorter row's tokens in a step; masked out, never read


@dataclass
class RowResult:
    """One row's decoding: its decoder tokens (prefix first) and what produced them."""

    tokens: list[int]
    prefix_length: int = 1
    from_small: list[bool] = field(default_factory=list)
    stats: BiLDStats = field(default_factory=BiLDStats)
    pending: int = 0  # drafted tokens not yet checked
    round_steps: int = 0  # small-model steps since the last check
    small_length: int = 0  # tokens in the small model's cache
    large_length: int = 0  # tokens in the large model's cache
    phase: str = DRAFTING
    # the small model's sampling distributions of the pending tokens (speculative sampling)
    draft_distributions: list[torch.Tensor] = field(default_factory=list)


class BatchLoop:
    """One decoding call over a batch (see the module docstring). `samplers`: one per row
    (`Sampler.for_row`), or None for greedy decoding; `speculative`: sampled checks accept
    drafts by speculative sampling instead of BiLD's rollback rule."""

    def __init__(
        self,
        small: LeanDecoder | None,
        large: LeanDecoder,
        *,
        prefixes: list[list[int]],
        forced_first: int | None,
        eos_ids: Collection[int],
        max_new_tokens: int,
        fallback_threshold: float,
        rollback_threshold: float,
        max_small_steps: int,
        vocab_size: int | None,
        shared_checks: bool = False,
        samplers: list[Sampler] | None = None,
        speculative: bool = False,
    ) -> None:
        self.small, self.large = small, large
        self.samplers = samplers if samplers and samplers[0].do_sample else None
        self.speculative = speculative
        self.eos_ids = frozenset(eos_ids)
        self.max_new_tokens = max_new_tokens
        self.fallback_threshold = fallback_threshold
        self.rollback_threshold = rollback_threshold
        self.max_small_steps = max_small_steps
        self.vocab_size = vocab_size
        self.shared_checks = shared_checks
        first_phase = DRAFTING if small is not None else WAITING
        self.rows = [
            RowResult(tokens=list(prefix), prefix_length=len(prefix), phase=first_phase)
            for prefix in prefixes
        ]
        if forced_first is not None:  # known without a forward pass, as in the one-row loop
            for row in self.rows:
                self._accept_large_token(row, forced_first)

    # -- bookkeeping --

    def _full(self, row: RowResult) -> bool:
        return len(row.tokens) - row.prefix_length >= self.max_new_tokens

    def _accept_large_token(self, row: RowResult, token: int) -> None:
        row.tokens.append(token)
        row.from_small.append(False)
        row.stats.large_tokens += 1
        row.round_steps = 0
        if token in self.eos_ids or self._full(row):
            row.phase = FINISHED
        else:
            row.phase = DRAFTING if self.small is not None else WAITING

    def _feed(
        self, decoder: LeanDecoder, indices: list[int], fed: list[int], read: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run `decoder` on each listed row's unfed tokens (from its cached length `fed[i]`);
        return the logits at each row's last `read[i]` tokens, (sum of read, vocab) in row
        order (the output layer runs there only), with the fed ids and that position mask."""
        pairs = zip(indices, fed, strict=True)
        chunks = [self.rows[index].tokens[start:] for index, start in pairs]
        widths = [len(chunk) for chunk in chunks]
        width = max(widths)
        padded = [chunk + [FILLER] * (width - len(chunk)) for chunk in chunks]
        device = decoder.device
        new_ids = torch.tensor(padded, device=device)
        starts = torch.tensor(fed, device=device)
        columns = torch.arange(width, device=device)
        ends = torch.tensor(widths, device=device)[:, None]
        firsts = ends - torch.tensor(read, device=device)[:, None]
        keep = (columns >= firsts) & (columns < ends)
        whole = len(indices) == decoder.batch_size
        selected = None if whole else torch.tensor(indices, device=device)
        logits = decoder.step(new_ids, starts, selected, keep=keep)[..., : self.vocab_size]
        return logits, new_ids, keep

    # -- the two model steps --

    def _small_step(self, indices: list[int]) -> None:
        fed = [self.rows[index].small_length for index in indices]
        last, _, _ = self._feed(self.small, indices, fed, [1] * len(indices))
        if self.samplers is None:
            probabilities = torch.softmax(last.float(), dim=-1)
            top = probabilities.max(-1)
            tops, tokens = top.values.tolist(), top.indices.tolist()
        else:  # the rows share their settings, not their draws
            last = last.to(self.large.device)  # where the samplers' generators live
            probabilities = self.samplers[0].distribution(last)
            tops = probabilities.max(-1).values.tolist()
            tokens = [
                int(self.samplers[index].choose(probabilities[place]))
                for place, index in enumerate(indices)
            ]
        for place, (index, top_probability, token) in enumerate(
            zip(indices, tops, tokens, strict=True)
        ):
            row = self.rows[index]
            row.small_length = len(row.tokens)
            row.stats.small_steps += 1
            row.round_steps += 1
            if self.speculative and self.samplers is not None:
                row.draft_distributions.append(probabilities[place])
            if falls_back(top_probability, self.fallback_threshold):
                row.stats.fallbacks += 1
                row.phase = WAITING
                continue
            row.tokens.append(token)
            row.from_small.append(True)
            row.pending += 1
            if token in self.eos_ids or self._full(row) or row.round_steps >= self.max_small_steps:
                row.phase = WAITING

    def _large_step(self, indices: list[int]) -> None:
        # each row reads the position before its first draft, and one per draft
        fed = [self.rows[index].large_length for index in indices]
        read = [self.rows[index].pending + 1 for index in indices]
        logits, new_ids, keep = self._feed(self.large, indices, fed, read)
        if self.samplers is not None:
            start = 0
            for index, count in zip(indices, read, strict=True):
                self._sampled_verdict(index, logits[start : start + count])
                start += count
            return
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        following = torch.roll(new_ids, -1, dims=1)[keep]  # the token after each read position
        nll = -log_probs.gather(-1, following[:, None])[:, 0]
        choices = log_probs.argmax(-1)
        both = torch.stack((nll, choices.float())).tolist()
        start = 0
        for index, count in zip(indices, read, strict=True):
            row_nll = both[0][start : start + count - 1]  # the last read predicts a new token
            row_choices = [int(token) for token in both[1][start : start + count]]
            self._verdict(self.rows[index], *self._rollback(self.rows[index], row_nll, row_choices))
            start += count

    def _rollback(
        self, row: RowResult, nll: list[float], choices: list[int]
    ) -> tuple[int | None, int]:
        """BiLD's rule for one row: (the first replaced draft or None, the large model's token)."""
        drafted = row.tokens[len(row.tokens) - row.pending :]
        index = rollback_index(drafted, nll, choices[:-1], self.rollback_threshold)
        return index, choices[-1] if index is None else choices[index]

    def _sampled_verdict(self, index: int, logits: torch.Tensor) -> None:
        """One row's check with its own sampler, drawing in the one-row loop's order."""
        row, sampler = self.rows[index], self.samplers[index]
        drafted = row.tokens[len(row.tokens) - row.pending :]
        if self.speculative:
            target = sampler.distribution(logits)
            verdict = speculative_verdict(sampler, target, drafted, row.draft_distributions)
        else:
            drafted_ids = torch.tensor(drafted, dtype=torch.long)
            verdict = self._rollback(row, *large_check(sampler, logits, drafted_ids))
        row.draft_distributions.clear()
        self._verdict(row, *verdict)

    def _verdict(self, row: RowResult, index: int | None, token: int) -> None:
        """The one-row loop's `_check_and_continue` for one row: keep the drafts before
        `index` (all of them when None), then append the large model's `token`."""
        row.stats.large_calls += 1
        row.large_length = len(row.tokens)
        ended_on_draft = row.pending > 0 and (row.tokens[-1] in self.eos_ids or self._full(row))
        if index is None:
            row.stats.small_accepted += row.pending
            row.pending = 0
            if ended_on_draft:
                row.phase = FINISHED
            else:
                self._accept_large_token(row, token)
            return
        row.stats.rollbacks += 1
        row.stats.small_accepted += index
        row.stats.rolled_back += row.pending - index
        keep = len(row.tokens) - row.pending + index
        row.pending = 0
        del row.tokens[keep:]
        del row.from_small[keep - row.prefix_length :]
        row.large_length = min(row.large_length, keep)
        row.small_length = min(row.small_length, keep)
        self._accept_large_token(row, token)

    def run(self) -> list[RowResult]:
        while True:
            drafting = [i for i, row in enumerate(self.rows) if row.phase == DRAFTING]
            if drafting:
                self._small_step(drafting)
            waiting = [i for i, row in enumerate(self.rows) if row.phase == WAITING]
            if waiting and self.shared_checks:  # every row with drafts joins the check
                waiting = [
                    i
                    for i, row in enumerate(self.rows)
                    if row.phase == WAITING or (row.phase == DRAFTING and row.pending)
                ]
            if waiting:
                self._large_step(waiting)
            if not drafting and not waiting:
                break
        for row in self.rows:
            row.stats.generated = len(row.tokens) - row.prefix_length
        return self.rows
