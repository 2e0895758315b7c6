"""Metrics agree with sacrebleu / rouge-score called directly; the Pareto front is right."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from bild_align.measure.metrics import bleu, chrf, rouge, score
from bild_align.measure.pareto import fastest_within, pareto_front

HYPOTHESES = ["The house is big .", "a cat sleeps here", "Nothing matches at all"]
REFERENCES = ["The house is large.", "A cat sleeps here.", "Something else entirely"]


def test_bleu_matches_sacrebleu_with_signature():
    result = bleu(HYPOTHESES, REFERENCES)
    direct = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES])
    assert result["score"] == pytest.approx(direct.score)
    assert "tok:13a" in result["signature"] and "case:mixed" in result["signature"]


@pytest.mark.parametrize("kind", ["rougeL", "rougeLsum"])
def test_rouge_matches_rouge_score(kind):
    references = [r.replace(". ", ".\n") for r in REFERENCES]
    result = rouge(HYPOTHESES, references, kind)
    scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)
    pairs = zip(HYPOTHESES, references, strict=True)
    direct = [scorer.score(r, h)[kind].fmeasure for h, r in pairs]
    assert result["score"] == pytest.approx(100 * sum(direct) / len(direct))
    assert kind in result["signature"]


def test_golden_values_computed_by_hand():
    # all n-gram precisions 1, 6 of 8 reference words: BLEU = brevity penalty exp(1 - 8/6)
    assert bleu(["a b c d e f"], ["a b c d e f g h"])["score"] == pytest.approx(71.6531, abs=1e-3)
    assert bleu(["the house is big"], ["the house is big"])["score"] == pytest.approx(100.0)
    assert bleu(["p q r s"], ["w x y z"])["score"] == pytest.approx(0.0)
    # longest common subsequence "a c d": precision = recall = 3/4
    assert rouge(["a b c d"], ["a x c d"], "rougeL")["score"] == pytest.approx(75.0)
    # summary-level LCS over the reference's two lines finds every word
    assert rouge(["a b c d"], ["a b\nc d"], "rougeLsum")["score"] == pytest.approx(100.0)
    assert rouge(["a b c d"], ["a b\nc d"], "rougeL")["score"] == pytest.approx(100.0)
    assert chrf(["Das Haus"], ["Das Haus"])["score"] == pytest.approx(100.0)


def test_score_dispatch_and_errors():
    assert score("bleu", HYPOTHESES, REFERENCES)["metric"] == "bleu"
    with pytest.raises(ValueError, match="unknown metric"):
        score("meteor", HYPOTHESES, REFERENCES)
    with pytest.raises(ValueError, match="pair up"):
        bleu(HYPOTHESES, REFERENCES[:2])


def test_pareto_front_on_hand_made_points():
    points = [(40.0, 1.0), (39.5, 1.6), (39.0, 1.5), (38.0, 2.0), (38.0, 1.9), (40.0, 0.9)]
    assert pareto_front(points) == [True, True, False, True, False, False]
    assert fastest_within(points, best_quality=40.0, max_drop=1.0) == 1
    assert fastest_within(points, best_quality=40.0, max_drop=2.0) == 3
    assert fastest_within(points, best_quality=45.0, max_drop=1.0) is None
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [True, True]
