"""Token choice: greedy, or sampling with temperature / top-k / top-p, seedable.

    sampler = Sampler(do_sample=True, temperature=0.7, top_k=50, top_p=0.9, seed=0)
    probabilities = sampler.distribution(logits)      # (..., vocab), float32, sums to 1
    token = sampler.choose(probabilities)              # argmax when greedy, else a draw
    row_sampler = sampler.for_row(3)                   # row 3 of a batch: its own draws
    confidence(probabilities, "entropy")              # what the fallback rule compares
    index, token = speculative_verdict(row_sampler, target, drafted, draft_distributions)

The distribution a sampler draws from is the *target* distribution of every mode: BiLD's
fallback reads its top probability, speculative sampling compares the large and small
models' distributions on it, so the lossless guarantee holds for exactly what is sampled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class Sampler:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1: no nucleus filter
    seed: int | None = None
    device: torch.device | str = "cpu"

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 (use do_sample=False for greedy decoding)")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0 (0 disables it)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1] (1 disables it)")
        self.generator = torch.Generator(device=self.device)
        if self.seed is not None:
            self.generator.manual_seed(self.seed)
        else:
            self.generator.seed()

    def for_row(self, index: int) -> Sampler:
        """The sampler of row `index` of a batch: the same settings, its own generator (seeded
        with seed + index), so that a row draws what it draws when decoded alone with that
        seed, whichever rows share its batch."""
        if not self.do_sample:
            return self
        return replace(self, seed=None if self.seed is None else self.seed + index)

    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax of the warped logits (temperature, then top-k, then top-p); greedy: plain."""
        logits = logits.float()
        if not self.do_sample:
            return torch.softmax(logits, dim=-1)
        logits = logits / self.temperature
        if self.top_k:
            kth = torch.topk(logits, min(self.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, -torch.inf)
        probabilities = torch.softmax(logits, dim=-1)
        if self.top_p < 1:
            sorted_probs, order = torch.sort(probabilities, dim=-1, descending=True)
            # keep the smallest set whose mass reaches top_p (the first token always stays)
            outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= self.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probabilities = torch.zeros_like(probabilities).scatter(-1, order, sorted_probs)
            probabilities = probabilities / probabilities.sum(-1, keepdim=True)
        return probabilities

    def log_distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """Log-probabilities for cross-entropies: temperature only, so nothing is -inf."""
        logits = logits.float()
        if self.do_sample:
            logits = logits / self.temperature
        return torch.log_softmax(logits, dim=-1)

    def choose(self, probabilities: torch.Tensor) -> torch.Tensor:
        """One token per row: the argmax when greedy, else a draw (on the device)."""
        if not self.do_sample:
            return probabilities.argmax(-1)
        return torch.multinomial(probabilities, 1, generator=self.generator).squeeze(-1)


def confidence(probabilities: torch.Tensor, rule: str) -> torch.Tensor:
    """The fallback rule's confidence of each row of (rows, vocab) probabilities: the top
    probability ("max_prob"), or exp(-entropy) ("entropy"; `entr` makes 0 log 0 = 0)."""
    if rule == "entropy":
        return torch.exp(-torch.special.entr(probabilities).sum(-1))
    return probabilities.max(-1).values


def speculative_verdict(
    sampler: Sampler,
    target: torch.Tensor,
    drafted: list[int],
    draft_distributions: list[torch.Tensor],
) -> tuple[int | None, int]:
    """Lossless speculative sampling (Leviathan et al. 2023): accept each drafted token with
    probability min(1, p/q), resample the first rejected one from max(0, p - q), else draw a
    bonus token after the last draft. `target` holds the large model's sampling distributions
    at each draft's position and one more; returns (the first rejected draft's index or None,
    the token that replaces it or follows the drafts)."""
    if drafted:  # every draft's acceptance test at once: one transfer per check
        ids = torch.tensor(drafted, device=target.device)[:, None]
        p = target[: len(drafted)].gather(-1, ids)[:, 0]
        q = torch.stack(draft_distributions).gather(-1, ids)[:, 0]
        uniforms = torch.rand(len(drafted), generator=sampler.generator, device=target.device)
        rejected = (uniforms * q >= p).tolist()  # u >= p/q: reject
        if True in rejected:
            index = rejected.index(True)
            residual = torch.clamp(target[index] - draft_distributions[index], min=0)
            total = residual.sum()
            residual = residual / total if total > 0 else target[index]
            return index, int(sampler.choose(residual))
    return None, int(sampler.choose(target[-1]))
