"""Quality-vs-speed trade-offs: the Pareto front and the fastest acceptable setting.

pareto_front([(40.1, 1.0), (39.8, 1.6), (39.0, 1.5)])    # [True, True, False]
fastest_within([(40.1, 1.0), (39.8, 1.6)], best_quality=40.1, max_drop=1.0)   # 1
"""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For each (quality, speedup) point: is it on the front? A point is off the front when
    another one is at least as good on both axes and better on one."""

    def dominated(point: tuple[float, float]) -> bool:
        return any(
            other[0] >= point[0] and other[1] >= point[1] and other != point for other in points
        )

    return [not dominated(point) for point in points]


def fastest_within(
    points: Sequence[tuple[float, float]],
    best_quality: float,
    max_drop: float,
    min_speedup: float = 1.0,
) -> int | None:
    """Index of the fastest point whose quality is at most `max_drop` below `best_quality`
    and whose speedup beats `min_speedup` (the reference itself: a slower setting is never the
    answer); None when there is none."""
    allowed = [
        i
        for i, (quality, speedup) in enumerate(points)
        if quality >= best_quality - max_drop and speedup > min_speedup
    ]
    return max(allowed, key=lambda i: points[i][1]) if allowed else None
