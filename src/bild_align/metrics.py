"""Quality metrics as pure functions: strings in, the score with its signature out.

    bleu(["The house is big."], ["The house is large."])
    # {"metric": "bleu", "score": 59.46, "signature": "nrefs:1|case:mixed|eff:no|tok:13a|..."}
    rouge(hypotheses, references, "rougeLsum")
    score("bleu", hypotheses, references)            # dispatch by the task's metric name

BLEU is sacrebleu's corpus BLEU (13a tokenisation, case-sensitive) against the raw reference
strings. ROUGE is rouge-score's F-measure x 100, with the Porter stemmer; ROUGE-Lsum treats
newlines as sentence boundaries (CNN/DailyMail highlights are one sentence per line).
"""

from __future__ import annotations

from collections.abc import Sequence

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
