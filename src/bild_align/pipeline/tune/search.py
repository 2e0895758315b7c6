"""The arithmetic of `bild-align tune`: settings, their neighbours, a cost model, the budget.

    grid = coarse_grid(("max_prob", "entropy"), (0, 2, 4, 8), (0.1, 0.2), (10,))  # rb, fb, steps
    setting_key(policy), setting_fields(policy)   # a searched BiLDPolicy's name, its JSON
    neighbours(policy)                     # the settings around it, for refinement
    costs = fit_costs(features, seconds)   # seconds per small step, large call, ... (least squares)
    modelled_seconds(costs, counts)        # a setting's time from its decision counts
    budget_met(judgement, max_drop=1.0, min_quality=None)
    refinements(judged, speed, max_drop=1.0, min_quality=None)   # where to search next

Why a cost model: wall-clock time of a setting on a shared CPU is noisy, while its decision
counts (small steps, large calls, tokens checked) are exact and cheap to get by decoding in
batches (each row decides exactly as alone). Times measured one input at a time on a few rows
fit the seconds each decision costs; each setting's time is then its counts times those costs,
and the chosen setting is verified with real timing afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from bild_align.core.policies import BiLDPolicy

# what a decoding's time is made of, one coefficient each (seconds per unit)
COST_FEATURES = ("small_steps", "large_calls", "checked_tokens", "small_inputs", "large_inputs")


def setting(rule: str, rb: float, fb: float, steps: int, head=None) -> BiLDPolicy:
    """The policy of one searched setting (a learned rule carries the small model's head)."""
    return BiLDPolicy(
        fallback_threshold=fb,
        rollback_threshold=rb,
        max_small_steps=int(steps),
        fallback_rule=rule,
        fallback_head=head if rule == "learned" else None,
    )


def setting_of(fields: Mapping, head=None) -> BiLDPolicy:
    """The policy of a setting as tune.json writes it ({"rule", "rb", "fb", "steps"})."""
    return setting(fields["rule"], fields["rb"], fields["fb"], fields["steps"], head)


def setting_fields(policy: BiLDPolicy) -> dict:
    """A setting as tune.json writes it."""
    return {
        "rule": policy.fallback_rule,
        "rb": policy.rollback_threshold,
        "fb": policy.fallback_threshold,
        "steps": policy.max_small_steps,
    }


def setting_key(policy: BiLDPolicy) -> str:
    """A setting's name, e.g. `max_prob rb=2 fb=0.4 steps=5`."""
    return (
        f"{policy.fallback_rule} rb={policy.rollback_threshold:g} "
        f"fb={policy.fallback_threshold:g} steps={policy.max_small_steps}"
    )


def setting_order(policy: BiLDPolicy) -> tuple:
    return tuple(setting_fields(policy).values())


def coarse_grid(
    rules: Iterable[str],
    rollback_thresholds: Iterable[float],
    fallback_thresholds: Iterable[float],
    max_small_steps: Iterable[int],
    head=None,
) -> list[BiLDPolicy]:
    """Every combination of the rules and values given (tune's first search)."""
    return [
        setting(rule, rb, fb, steps, head)
        for rule in rules
        for rb in rollback_thresholds
        for fb in fallback_thresholds
        for steps in max_small_steps
    ]


def neighbours(policy: BiLDPolicy) -> list[BiLDPolicy]:
    """The settings one move away: rollback threshold scaled by 2/3 or 3/2 (0, the exact mode,
    moves to 1), fallback threshold halved or raised by half (capped at 1), max_small_steps
    scaled by 2/3 or 3/2 (at least 2)."""
    rb, fb, steps = policy.rollback_threshold, policy.fallback_threshold, policy.max_small_steps
    rb_moves = (1.0,) if rb == 0 else (rb * 2 / 3, rb * 1.5)
    fb_moves = (fb / 2, min(1.0, fb * 1.5))
    step_moves = (max(2, round(steps * 2 / 3)), round(steps * 1.5))
    found = {replace(policy, rollback_threshold=round(move, 3)) for move in rb_moves}
    found |= {replace(policy, fallback_threshold=round(move, 4)) for move in fb_moves}
    found |= {replace(policy, max_small_steps=move) for move in step_moves}
    found.discard(policy)
    return sorted(found, key=setting_order)


def cost_features(counts: Mapping[str, float], uses_small: bool, uses_large: bool) -> list[float]:
    """One decoding's features for the cost model, from its `BiLDStats` counts (a model
    decoding alone counts its steps as large calls)."""
    return [
        counts["small_steps"],
        counts["large_calls"],
        counts["small_accepted"] + counts["rolled_back"],  # drafts the large model re-reads
        float(uses_small),
        float(uses_large),
    ]


def fit_costs(features: Sequence[Sequence[float]], seconds: Sequence[float]) -> dict[str, float]:
    """Least-squares seconds per unit of each feature, none negative (a feature that would
    get a negative cost is dropped and the rest refitted)."""
    x, y = np.asarray(features, dtype=np.float64), np.asarray(seconds, dtype=np.float64)
    active = [column for column in range(x.shape[1]) if x[:, column].any()]
    while active:
        solution, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
        if (solution >= 0).all():
            break
        active.pop(int(np.argmin(solution)))
    costs = dict.fromkeys(COST_FEATURES, 0.0)
    for column, value in zip(active, solution if active else [], strict=True):
        costs[COST_FEATURES[column]] = float(value)
    return costs


def modelled_seconds(costs: Mapping[str, float], features: Sequence[float]) -> float:
    return float(
        sum(costs[name] * value for name, value in zip(COST_FEATURES, features, strict=True))
    )


def budget_met(judgement: Mapping[str, float], max_drop: float, min_quality: float | None) -> bool:
    """Whether a setting's bootstrap bounds (`upper_drop`, `lower_quality`) meet the budget."""
    if min_quality is not None:
        return judgement["lower_quality"] >= min_quality
    return judgement["upper_drop"] <= max_drop


def refinements(
    judged: dict, speed: dict, max_drop: float, min_quality: float | None
) -> list[BiLDPolicy]:
    """Unexplored neighbours of each rule's fastest setting within the budget (or, where none
    is, its best-quality one)."""
    fresh = []
    searched = [s for s in judged if isinstance(s, BiLDPolicy)]
    for rule in sorted({s.fallback_rule for s in searched}):
        mine = [s for s in searched if s.fallback_rule == rule]
        ok = [s for s in mine if budget_met(judged[s], max_drop, min_quality)]
        best = (
            max(ok, key=lambda s: speed[s]) if ok else max(mine, key=lambda s: judged[s]["quality"])
        )
        fresh += [s for s in neighbours(best) if s not in judged and s not in fresh]
    return fresh
