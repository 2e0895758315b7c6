"""Quality metrics as pure functions: strings in, the score with its signature out.

    bleu(["The house is big."], ["The house is large."])
    # {"metric": "bleu", "score": 59.46, "signature": "nrefs:1|case:mixed|eff:no|tok:13a|..."}
    rouge(hypotheses, references, "rougeLsum")
    score("bleu", hypotheses, references)            # dispatch by the task's metric name
    stats = segment_statistics("bleu", hypotheses, references)   # (rows, k), additive
    score_from_statistics("bleu", stats.sum(0))      # = score("bleu", ...)["score"]

Segment statistics are what a corpus score is computed from, one row per example, so that a
bootstrap can resample examples without scoring text again (`significance`).

BLEU is sacrebleu's corpus BLEU (13a tokenisation, case-sensitive) against the raw reference
strings. ROUGE is rouge-score's F-measure x 100, with the Porter stemmer; ROUGE-Lsum treats
newlines as sentence boundaries (CNN/DailyMail highlights are one sentence per line).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("bleu", "rougeL", "rougeLsum")


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; they must pair up"
        )


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    import sacrebleu

    _check(hypotheses, references)
    metric = sacrebleu.metrics.BLEU()
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return {"metric": "bleu", "score": result.score, "signature": str(metric.get_signature())}


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """sacrebleu's corpus chrF: character n-grams, meaningful even for short or odd outputs."""
    import sacrebleu

    _check(hypotheses, references)
    metric = sacrebleu.metrics.CHRF()
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return {"metric": "chrf", "score": result.score, "signature": str(metric.get_signature())}


def _installed_version(distribution: str) -> str | None:
    """The installed version of a package as pip knows it (never made up)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def rouge(hypotheses: Sequence[str], references: Sequence[str], kind: str = "rougeL") -> dict:
    import rouge_score
    from rouge_score import rouge_scorer

    _check(hypotheses, references)
    if kind not in ("rougeL", "rougeLsum"):
        raise ValueError(f"unknown ROUGE variant {kind!r}; use rougeL or rougeLsum")
    scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)
    scores = [
        scorer.score(reference, hypothesis)[kind].fmeasure
        for hypothesis, reference in zip(hypotheses, references, strict=True)
    ]
    version = _installed_version("rouge-score") or getattr(rouge_score, "__version__", "unknown")
    return {
        "metric": kind,
        "score": 100.0 * sum(scores) / len(scores) if scores else 0.0,
        "signature": f"rouge-score:{version}|{kind}|fmeasure|stemmer:porter"
        + ("|split:newline" if kind == "rougeLsum" else ""),
    }


def score(metric: str, hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    if metric == "bleu":
        return bleu(hypotheses, references)
    if metric in ("rougeL", "rougeLsum"):
        return rouge(hypotheses, references, metric)
    raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")


def _sacrebleu_metric(metric: str):
    import sacrebleu

    return {"bleu": sacrebleu.metrics.BLEU, "chrf": sacrebleu.metrics.CHRF}[metric]()


def segment_statistics(
    metric: str, hypotheses: Sequence[str], references: Sequence[str]
) -> np.ndarray:
    """One row of additive statistics per example: sacrebleu's n-gram counts for BLEU and chrF
    (the ones its own significance tests resample), (F-measure, 1) for ROUGE."""
    _check(hypotheses, references)
    if metric in ("bleu", "chrf"):
        rows = _sacrebleu_metric(metric)._extract_corpus_statistics(
            list(hypotheses), [list(references)]
        )
        return np.asarray(rows, dtype=np.float64).reshape(len(hypotheses), -1)
    if metric in ("rougeL", "rougeLsum"):
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer([metric], use_stemmer=True)
        return np.asarray(
            [
                (scorer.score(reference, hypothesis)[metric].fmeasure, 1.0)
                for hypothesis, reference in zip(hypotheses, references, strict=True)
            ],
            dtype=np.float64,
        ).reshape(len(hypotheses), 2)
    raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)} or chrf")


def score_from_statistics(metric: str, summed: np.ndarray) -> float:
    """The corpus score from summed segment statistics (`segment_statistics(...).sum(0)`)."""
    if metric in ("bleu", "chrf"):
        counts = [int(round(value)) for value in summed]
        return float(_sacrebleu_metric(metric)._compute_score_from_stats(counts).score)
    return 100.0 * float(summed[0]) / float(summed[1]) if summed[1] else 0.0
