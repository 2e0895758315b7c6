"""Paired bootstrap resampling (Koehn 2004): how far below a reference system's score another
system's could lie, judged on the same examples.

    weights = resample_weights(rows=744, samples=1000, seed=0)   # shared by every comparison
    drop = paired_drop("bleu", large_stats, bild_stats, weights, confidence=0.95)
    drop["drop"], drop["upper"]    # the point estimate, and the one-sided upper bound

Each resample draws the examples with replacement; both systems are scored on the same draw,
so what the bound measures is the difference between them, not the spread of the test set.
"""

from __future__ import annotations

import numpy as np

from bild_align.measure.metrics import score_from_statistics


def resample_weights(rows: int, samples: int = 1000, seed: int = 0) -> np.ndarray:
    """(samples, rows): how often each example is drawn in each resample."""
    generator = np.random.default_rng(seed)
    draws = generator.integers(0, rows, size=(samples, rows))
    weights = np.zeros((samples, rows), dtype=np.float64)
    np.add.at(weights, (np.arange(samples)[:, None], draws), 1.0)
    return weights


def resampled_scores(metric: str, statistics: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The corpus score on each resample."""
    summed = weights @ statistics
    return np.array([score_from_statistics(metric, row) for row in summed])


def paired_drop(
    metric: str,
    reference: np.ndarray,
    system: np.ndarray,
    weights: np.ndarray,
    confidence: float = 0.95,
    reference_scores: np.ndarray | None = None,
) -> dict:
    """How many points `system` scores below `reference` (segment statistics of the same
    examples): the point estimate, and the `confidence` one-sided upper bound over resamples
    (`reference_scores`: the reference's resampled scores, when already computed)."""
    if reference_scores is None:
        reference_scores = resampled_scores(metric, reference, weights)
    drops = reference_scores - resampled_scores(metric, system, weights)
    point = score_from_statistics(metric, reference.sum(0)) - score_from_statistics(
        metric, system.sum(0)
    )
    return {"drop": float(point), "upper": float(np.quantile(drops, confidence))}


def lower_bound(
    metric: str, statistics: np.ndarray, weights: np.ndarray, confidence: float = 0.95
) -> float:
    """The `confidence` one-sided lower bound of a system's score over resamples."""
    return float(np.quantile(resampled_scores(metric, statistics, weights), 1 - confidence))
