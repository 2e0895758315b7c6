"""Distillation objectives and alignment measures: pure functions checked against direct
formulas on random distributions, and their use in training on a tiny pair."""

import pytest
import torch

from bild_align.configs import DIVERGENCES
from bild_align.pipeline.train.distill import (
    TopK,
    alignment_measures,
    measure_sums,
    token_divergence,
)


def _logits(seed: int, shape=(2, 5, 11), scale=3.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_divergences_vanish_only_when_the_distributions_match(kind):
    student, teacher = _logits(1), _logits(2)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert token_divergence(teacher, teacher, mask, kind).item() == pytest.approx(0, abs=1e-5)
    assert token_divergence(student, teacher, mask, kind).item() > 0.05


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_divergences_match_their_formulas(seed):
    student, teacher = _logits(seed), _logits(seed + 10)
    mask = torch.rand(2, 5, generator=torch.Generator().manual_seed(seed)) > 0.3
    p_s, p_l = student.softmax(-1)[mask], teacher.softmax(-1)[mask]
    forward = (p_l * (p_l.log() - p_s.log())).sum(-1).mean()
    reverse = (p_s * (p_s.log() - p_l.log())).sum(-1).mean()
    tvd = 0.5 * (p_l - p_s).abs().sum(-1).mean()
    m = 0.3 * p_l + 0.7 * p_s
    jsd = (0.3 * (p_l * (p_l / m).log()).sum(-1) + 0.7 * (p_s * (p_s / m).log()).sum(-1)).mean()
    got = {k: token_divergence(student, teacher, mask, k, beta=0.3).item() for k in DIVERGENCES}
    assert got["forward_kl"] == pytest.approx(forward.item(), rel=1e-4)
    assert got["reverse_kl"] == pytest.approx(reverse.item(), rel=1e-4)
    assert got["tvd"] == pytest.approx(tvd.item(), rel=1e-4)
    assert got["jsd"] == pytest.approx(jsd.item(), rel=1e-4)
    # tvd is exactly one minus speculative decoding's expected acceptance
    measures = alignment_measures([measure_sums(student, teacher, mask)])
    assert measures["expected_acceptance"] == pytest.approx(1 - tvd.item(), rel=1e-4)


def test_padded_vocabularies_are_compared_on_the_shared_tokens():
    student, teacher = _logits(6), _logits(7)
    padded = torch.cat([teacher, torch.full((2, 5, 3), -5.0)], dim=-1)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert token_divergence(student, padded[..., :11], mask).item() == pytest.approx(
        token_divergence(student, teacher, mask).item()
    )
    assert token_divergence(student, padded, mask).item() == pytest.approx(
        token_divergence(student, teacher, mask).item(), rel=1e-5
    )


def test_gradients_reach_the_student_only():
    student = _logits(8).requires_grad_()
    teacher = _logits(9).requires_grad_()
    token_divergence(student, teacher, torch.ones(2, 5, dtype=torch.bool), "jsd").backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None


def test_measures_follow_their_definitions():
    student, teacher = _logits(11), _logits(12)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    p_s, p_l = student.softmax(-1)[mask], teacher.softmax(-1)[mask]
    agree = p_s.argmax(-1) == p_l.argmax(-1)
    full = alignment_measures([measure_sums(student, teacher, mask)])
    assert full["agreement"] == pytest.approx(agree.float().mean().item())
    nll = -p_l.gather(-1, p_s.argmax(-1, keepdim=True)).log().mean()
    assert full["large_nll_of_small_choice"] == pytest.approx(nll.item(), rel=1e-4)
    if agree.any():
        assert full["confidence_agree"] == pytest.approx(p_s.max(-1).values[agree].mean().item())
    # a top-k teacher gives lower bounds that tighten with k, exact at k = vocabulary
    three = alignment_measures([measure_sums(student, TopK.of(teacher, 3), mask)])
    assert three["expected_acceptance"] <= full["expected_acceptance"] + 1e-6
    assert three["large_nll_of_small_choice"] <= full["large_nll_of_small_choice"] + 1e-6
    eleven = alignment_measures([measure_sums(student, TopK.of(teacher, 11), mask)])
    assert eleven == pytest.approx(full)
    # batches combine by position counts, not by batch means
    halves = [
        measure_sums(student[:1], teacher[:1], mask[:1]),
        measure_sums(student[1:], teacher[1:], mask[1:]),
    ]
    assert alignment_measures(halves) == pytest.approx(full)


def test_confidence_calibration_pushes_the_top_probability_toward_agreement():
    """One gradient step raises the top probability where the top token is the target and
    lowers it where it is not; masked positions get no gradient."""
    from bild_align.pipeline.train.distill import confidence_calibration

    torch.manual_seed(0)
    logits = torch.randn(1, 4, 12, requires_grad=True)
    top = logits.detach().argmax(-1)[0]
    targets = torch.stack([top[0], (top[1] + 1) % 12, top[2], (top[3] + 1) % 12])[None]
    mask = torch.tensor([[True, True, True, False]])
    loss = confidence_calibration(logits, targets, mask)
    loss.backward()
    stepped = torch.softmax(logits.detach() - 1.0 * logits.grad, -1).max(-1).values[0]
    before = torch.softmax(logits.detach(), -1).max(-1).values[0]
    assert stepped[0] > before[0] and stepped[2] > before[2]  # agrees: more confident
    assert stepped[1] < before[1]  # disagrees: less confident
    assert torch.equal(logits.grad[0, 3], torch.zeros(12))  # masked


def test_the_recipe_offers_exactly_the_divergences_computed():
    from bild_align.pipeline.train.distill import DIVERGENCE_NAMES

    assert DIVERGENCE_NAMES == DIVERGENCES
