"""What a decoding call counts, and what it returns.

out.stats.large_calls_per_token     # derived rates from exact counts
total = BiLDStats(); total += out.stats
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


@dataclass
class BiLDStats:
    """Exact counts for one decoding call, plus rates derived from them."""

    small_steps: int = 0  # forward passes of the small model (fallback steps included)
    large_calls: int = 0  # forward passes of the large model
    fallbacks: int = 0  # small steps whose top probability was below the fallback threshold
    rollbacks: int = 0  # large-model checks that rejected a drafted token
    small_accepted: int = 0  # small-model tokens kept in the output
    rolled_back: int = 0  # drafted tokens discarded by rollbacks (rejections)
    large_tokens: int = 0  # output tokens chosen by the large model
    generated: int = 0  # new tokens in the output (= small_accepted + large_tokens)

    @property
    def drafted(self) -> int:
        return self.small_accepted + self.rolled_back

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
        return self.rolled_back / self.drafted if self.drafted else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Share of drafted tokens that were accepted (speculative decoding's figure)."""
        return self.small_accepted / self.drafted if self.drafted else 0.0

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
            "acceptance_rate",
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
    """`sequences`: (rows, prefix + generated), prefix the start token or the prompt, shorter
    rows padded with the pad token. `stats`: the totals over the rows; `row_stats`: per row.
    `from_small[i]`: row i's new tokens, each drafted by the small model or not."""

    sequences: torch.LongTensor
    stats: BiLDStats
    from_small: list[list[bool]] = field(default_factory=list)
    row_stats: list[BiLDStats] = field(default_factory=list)
