"""Distillation objectives and the alignment measures that BiLD's decisions read, as pure
functions of logits (batch, positions, vocab) and a mask of the target positions.

    loss = token_divergence(student_logits, teacher_logits, mask, "forward_kl", temperature=1.0)
    loss = confidence_calibration(student_logits, targets, mask)   # BiLD's fallback signal
    sums = measure_sums(student_logits, teacher, mask)     # teacher: TopK or logits
    alignment_measures([sums, ...])["expected_acceptance"]  # mean of sum_v min(p_s, p_l)

Why these: speculative decoding accepts a drafted token with probability sum_v min(p_s, p_l)
(Leviathan et al. 2023); BiLD falls back when the small model's top probability is low, so its
confidence should separate the positions where it agrees with the large model from the others;
and BiLD rolls back when the large model's cross-entropy of the small model's token is high.
Divergences follow DistillSpec (Zhou et al. 2024) and GKD (Agarwal et al. 2024); the
generalised JSD with beta interpolates between forward KL (beta -> 0) and reverse KL (-> 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# the divergences `token_divergence` computes (configs.DIVERGENCES, the recipe key's choices, is the
# same tuple; a test keeps them equal: this module stays free of configuration)
DIVERGENCE_NAMES = ("forward_kl", "reverse_kl", "tvd", "jsd")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def confidence_calibration(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy between the small model's top probability and whether its top
    token is the target (the large model's choice), the two classes weighted alike: it raises
    the confidence where the small model agrees and lowers it where it does not, the split
    BiLD's fallback threshold makes. Without the balance the agreeing positions, usually most,
    would only sharpen the model everywhere. Agreement is a fact of the step, not
    differentiated; the confidence is."""
    probabilities = F.softmax(logits.float(), dim=-1)
    top = probabilities.max(-1)
    agrees = (top.indices == targets) & mask
    disagrees = ~(top.indices == targets) & mask
    confidence = top.values.clamp(1e-6, 1 - 1e-6)
    terms = [_masked_mean(-torch.log(confidence), agrees)]
    terms.append(_masked_mean(-torch.log1p(-confidence), disagrees))
    present = [term for term, where in zip(terms, (agrees, disagrees), strict=True) if where.any()]
    return sum(present) / max(1, len(present))


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "forward_kl",
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean over the masked positions of D(p_teacher || p_student), both at `temperature`.

    forward_kl: KL(p_l || p_s), mass-covering; reverse_kl: KL(p_s || p_l), mode-seeking;
    tvd: total variation 0.5 * sum |p_l - p_s| (1 - expected acceptance, exactly what
    speculative decoding pays); jsd: the generalised Jensen-Shannon divergence with weight
    `beta` (beta * KL(p_l || m) + (1 - beta) * KL(p_s || m), m = beta * p_l + (1 - beta) * p_s).
    The teacher is never differentiated."""
    if kind not in DIVERGENCE_NAMES:
        raise ValueError(f"unknown divergence {kind!r}; choose from {', '.join(DIVERGENCE_NAMES)}")
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])  # padded vocabularies
    student = F.log_softmax(student_logits[..., :vocab].float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits[..., :vocab].float().detach() / temperature, dim=-1)
    if kind == "forward_kl":
        per_position = (teacher.exp() * (teacher - student)).sum(-1)
    elif kind == "reverse_kl":
        per_position = (student.exp() * (student - teacher)).sum(-1)
    elif kind == "tvd":
        per_position = 0.5 * (teacher.exp() - student.exp()).abs().sum(-1)
    else:
        beta = min(max(beta, 1e-6), 1 - 1e-6)  # the ends are KL(p || p) = 0: keep a signal
        mixture = torch.logsumexp(
            torch.stack([teacher + math.log(beta), student + math.log(1 - beta)]), dim=0
        )
        per_position = beta * (teacher.exp() * (teacher - mixture)).sum(-1) + (1 - beta) * (
            student.exp() * (student - mixture)
        ).sum(-1)
    # KL scales as 1/T^2 in its gradients; multiplying back keeps learning rates comparable
    scale = temperature**2 if kind in ("forward_kl", "reverse_kl", "jsd") else 1.0
    return scale * _masked_mean(per_position, mask)


@dataclass
class TopK:
    """The teacher's k most likely tokens per position: enough to measure acceptance on
    vocabularies of 250k without keeping 250k probabilities per position."""

    log_probs: torch.Tensor  # (batch, positions, k), sorted, most likely first
    ids: torch.Tensor  # (batch, positions, k)

    @classmethod
    def of(cls, logits: torch.Tensor, k: int, vocab_size: int | None = None) -> TopK:
        vocab = vocab_size or logits.shape[-1]
        log_probs = F.log_softmax(logits[..., :vocab].float(), dim=-1)
        values, ids = log_probs.topk(min(k, vocab), dim=-1)
        return cls(values, ids)

    def to(self, device) -> TopK:
        return TopK(self.log_probs.to(device), self.ids.to(device))


MEASURES = (
    "expected_acceptance",
    "agreement",
    "confidence_agree",
    "confidence_disagree",
    "large_nll_of_small_choice",
)


def measure_sums(
    student_logits: torch.Tensor,
    teacher: TopK | torch.Tensor,
    mask: torch.Tensor,
    vocab_size: int | None = None,
) -> dict[str, tuple[float, int]]:
    """(sum, count) of each of MEASURES over the masked target positions, so that batches add
    up; `alignment_measures` divides. Teacher-forced on the large model's outputs:

    expected_acceptance: sum_v min(p_small(v), p_large(v)) (with a TopK teacher, over its k
      tokens: a lower bound, tight once k covers the large model's mass);
    agreement: the two argmaxes agree;
    confidence_agree / confidence_disagree: the small model's top probability where it agrees /
      disagrees with the large model's argmax (fallback reads this gap);
    large_nll_of_small_choice: -log p_large(small model's argmax) (rollback reads this; a token
      outside a TopK teacher's k counts at the k-th probability, a lower bound)."""
    if isinstance(teacher, torch.Tensor):
        teacher = TopK.of(teacher, teacher.shape[-1], vocab_size)
    vocab = vocab_size or student_logits.shape[-1]
    small = F.softmax(student_logits[..., :vocab].float(), dim=-1)
    acceptance = torch.minimum(small.gather(-1, teacher.ids), teacher.log_probs.exp()).sum(-1)
    confidence, choice = small.max(-1)
    agree = choice == teacher.ids[..., 0]
    found = teacher.ids == choice.unsqueeze(-1)
    large_log_prob = torch.where(
        found.any(-1), (teacher.log_probs * found).sum(-1), teacher.log_probs[..., -1]
    )
    mask = mask.bool()

    def total(values: torch.Tensor, where: torch.Tensor) -> tuple[float, int]:
        return float(values[where].sum()), int(where.sum())

    return {
        "expected_acceptance": total(acceptance, mask),
        "agreement": total(agree.float(), mask),
        "confidence_agree": total(confidence, mask & agree),
        "confidence_disagree": total(confidence, mask & ~agree),
        "large_nll_of_small_choice": total(-large_log_prob, mask),
    }


def alignment_measures(sums: list[dict[str, tuple[float, int]]]) -> dict[str, float]:
    """The means of `measure_sums` over batches (NaN where a measure saw no position)."""
    means = {}
    for name in MEASURES:
        total = sum(part[name][0] for part in sums)
        count = sum(part[name][1] for part in sums)
        means[name] = total / count if count else float("nan")
    return means
