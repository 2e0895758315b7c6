"""BiLD's two decisions, as pure functions, and the policies that the decode loop asks.

    falls_back(top_probability=0.4, fallback_threshold=0.6)            # True: the large model
    rollback_index([5, 9], [0.1, 3.2], [5, 7], rollback_threshold=2)   # 1: replace token 9
    policy = BiLDPolicy(fallback_threshold=0.3, rollback_threshold=6, max_small_steps=10)
    BiLDPolicy(fallback_threshold=0.1, fallback_rule="entropy")   # exp(-entropy) < 0.1
    BiLDPolicy(0.5, 4.0, fallback_rule="learned", fallback_head=head)   # P(large agrees) < 0.5
    ReferencePolicy(...)       # the original implementation's decisions (`reference_compat`)
    SpeculativePolicy(max_small_steps=4)   # classic speculative decoding, gamma = 4

A policy holds the settings and answers the loop's questions: does the small model hand over,
and which draft does the large model reject; its `Schedule` (one per policy type, so that a
mode is a type, not a flag) says where the original implementation and speculative decoding
order the work differently.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from bild_align.core.checks import check_count

# The defaults of every tool and of bild_generate. rb=2 keeps quality close to the large model's
# on the pairs we measured; the demo's tuned setting (rb=6, fb=0.3) trades more for speed.
FALLBACK_THRESHOLD = 0.6
ROLLBACK_THRESHOLD = 2.0
MAX_SMALL_STEPS = 10
# What the fallback compares with its threshold, a confidence in [0, 1] of the small model's
# distribution: its top probability, or exp(-entropy) (1 when certain, 1/vocab when uniform;
# never above the top probability, so its thresholds sit lower), or a learned head's
# probability that the large model agrees (`fallback_head.FallbackHead`).
FALLBACK_RULES = ("max_prob", "entropy", "learned")
# The settings' earlier names, which recipes and records written before may still hold; every
# config names them as BiLDPolicy does (the short options --rb and --fb remain).
EARLIER_NAMES = {
    "rb": "rollback_threshold",
    "fb": "fallback_threshold",
    "steps": "max_small_steps",
    "fallback": "fallback_rule",
    "sweep_rb": "sweep_rollback_thresholds",
    "sweep_fb": "sweep_fallback_thresholds",
}


def rollback_threshold_ok(value: object) -> bool:
    """A rollback threshold is a number >= 0 (0: the exact mode; infinity: never roll back)."""
    return _number(value) and value >= 0


def fallback_threshold_ok(value: object, at_most_one: bool = False) -> bool:
    """A fallback threshold is a number >= 0 (above 1 the small model always hands over),
    within [0, 1] where settings are searched or swept."""
    return _number(value) and 0 <= value <= (1 if at_most_one else math.inf)


def threshold_problems(
    rollback: Sequence[float],
    fallback: Sequence[float],
    *,
    names: tuple[str, str] = ("--rb", "--fb"),
    fallback_at_most_one: bool = False,
) -> Iterator[str]:
    """Every range check of the two thresholds, in words: the policies' and every command's."""
    rb_name, fb_name = names
    if not rollback or not all(map(rollback_threshold_ok, rollback)):
        yield f"{rb_name} must be a number >= 0 (0 is the exact mode; got {_listed(rollback)})"
    if not fallback or not all(fallback_threshold_ok(value) for value in fallback):
        yield (
            f"{fb_name} must be a number >= 0 (the small model hands over below it; got "
            f"{_listed(fallback)})"
        )
    elif fallback_at_most_one and not all(fallback_threshold_ok(v, True) for v in fallback):
        yield f"{fb_name} must lie in [0, 1] where settings are searched (got {_listed(fallback)})"


def _number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value


def _listed(values: Sequence) -> str:
    return ", ".join(f"{value!r}" for value in values) or "none"


@dataclass(frozen=True)
class Schedule:
    """How a policy type orders the work (BiLD as this project runs it: all False)."""

    large_first: bool = False  # the large model produces the first token
    unchecked_final_drafts: bool = False  # drafts that end the output stay unchecked
    large_after_correction: bool = False  # the large model also produces the next token
    lossless_sampling: bool = False  # sampled checks by speculative sampling
    first_above_only: bool = False  # the rollback looks at one token (`rollback_index`)


def falls_back(top_probability: float, fallback_threshold: float) -> bool:
    """Fallback policy: the small model hands over when it is not confident enough."""
    return top_probability < fallback_threshold


def rollback_index(
    drafted: Sequence[int],
    large_nll: Sequence[float],
    large_choice: Sequence[int],
    rollback_threshold: float,
    reference_compat: bool = False,
) -> int | None:
    """Rollback policy: index of the first drafted token the large model rejects, or None.

    A drafted token is rejected when the large model's cross-entropy of it exceeds the threshold
    and the large model would have chosen another token. The original implementation looks only
    at the first token above the threshold and keeps everything if the large model agrees there
    (`reference_compat=True`).
    """
    for index, (token, nll, best) in enumerate(zip(drafted, large_nll, large_choice, strict=True)):
        if nll > rollback_threshold:
            if best != token:
                return index
            if reference_compat:
                return None
    return None


@dataclass(frozen=True)
class BiLDPolicy:
    """Big Little Decoding as this project runs it: the small model drafts from the first token
    on, every draft is checked (a drafted EOS too), and a correction is the check's one token."""

    fallback_threshold: float = FALLBACK_THRESHOLD
    rollback_threshold: float = ROLLBACK_THRESHOLD
    max_small_steps: int = MAX_SMALL_STEPS
    fallback_rule: str = "max_prob"
    fallback_head: object = field(default=None, compare=False, repr=False)  # rule "learned"

    schedule: ClassVar[Schedule] = Schedule()

    def __post_init__(self) -> None:
        names = ("rollback_threshold", "fallback_threshold")
        for problem in threshold_problems(
            [self.rollback_threshold], [self.fallback_threshold], names=names
        ):
            raise ValueError(problem)
        check_count("max_small_steps", self.max_small_steps)
        for name in ("fallback_threshold", "rollback_threshold"):  # frozen: set as dataclasses do
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.fallback_rule not in FALLBACK_RULES:
            raise ValueError(
                f"fallback_rule must be one of {', '.join(FALLBACK_RULES)} "
                f"(got {self.fallback_rule!r})"
            )
        if self.fallback_rule == "learned" and self.fallback_head is None:
            raise ValueError(
                "fallback_rule='learned' needs its fallback_head: "
                "bild_align.load_fallback_head(small_dir), trained by `bild-align train "
                "--fallback-head-only`"
            )

    def falls_back(self, confidence: float) -> bool:
        return falls_back(confidence, self.fallback_threshold)

    def rejected(
        self, drafted: Sequence[int], nll: Sequence[float], choices: Sequence[int]
    ) -> int | None:
        """The first drafted token the large model replaces, or None."""
        first_only = self.schedule.first_above_only
        return rollback_index(drafted, nll, choices, self.rollback_threshold, first_only)


@dataclass(frozen=True)
class ReferencePolicy(BiLDPolicy):
    """The original implementation's decisions, to reproduce the paper's numbers token for
    token: the large model produces the first token and the token after each correction, a
    drafted EOS (or the length limit) ends the output unchecked, an EOS produced by a rollback
    does not end it, and the rollback rule looks at the first token above the threshold only."""

    schedule: ClassVar[Schedule] = Schedule(
        large_first=True,
        unchecked_final_drafts=True,
        large_after_correction=True,
        first_above_only=True,
    )


@dataclass(frozen=True)
class SpeculativePolicy(BiLDPolicy):
    """Classic speculative decoding: `max_small_steps` (gamma) drafts per check, never a
    fallback; greedy, the exact check; sampled, speculative sampling (lossless)."""

    fallback_threshold: float = 0.0
    rollback_threshold: float = 0.0
    max_small_steps: int = 4

    schedule: ClassVar[Schedule] = Schedule(lossless_sampling=True)
