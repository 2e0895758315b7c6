"""BiLD's two decisions, as pure functions of numbers the decode loop hands them.

falls_back(top_probability=0.4, fallback_threshold=0.6)            # True: the large model
rollback_index([5, 9], [0.1, 3.2], [5, 7], rollback_threshold=2)   # 1: replace token 9
"""

from __future__ import annotations

from collections.abc import Sequence

# The defaults of every tool and of bild_generate. rb=2 keeps quality close to the large model's
# on the pairs we measured; the demo's tuned setting (rb=6, fb=0.3) trades more for speed.
FALLBACK_THRESHOLD = 0.6
ROLLBACK_THRESHOLD = 2.0
MAX_SMALL_STEPS = 10


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
