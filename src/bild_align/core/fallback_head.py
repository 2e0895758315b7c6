"""The learned fallback rule: a small classifier that reads what the small model's output layer
reads, with its top probability and entropy, and predicts whether the large model would choose
the small model's token.

    head = FallbackHead(tensors)        # as `bild_align.models.fallback_heads` trains, saves it
    confidence = head(hidden, probabilities)   # (rows,) in (0, 1): the chance of agreement
    BiLDPolicy(fallback_threshold=0.5, fallback_rule="learned", fallback_head=head)

The top probability is the paper's signal; it says how sure the small model is, not whether the
large model agrees. The hidden state carries more (which kind of token comes next, how far into
the output the row is), and a classifier trained on calibration rows turns it into the
probability the fallback should compare: the small model hands over when agreement is unlikely.
"""

from __future__ import annotations

import torch

# the tensors a head is made of: standardisation, then one hidden layer
TENSORS = ("mean", "std", "w1", "b1", "w2", "b2")


def head_features(hidden: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """(rows, width + 2): the output layer's input, the top probability and the entropy."""
    top = probabilities.max(-1).values
    entropy = torch.special.entr(probabilities).sum(-1)
    return torch.cat((hidden.float(), top[:, None], entropy[:, None]), dim=-1)


class FallbackHead:
    """A trained head's tensors (float32, on one device) and its arithmetic."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = [name for name in TENSORS if name not in tensors]
        if missing:
            raise ValueError(f"a fallback head needs the tensors {', '.join(missing)}")
        self.tensors = {name: tensors[name].float() for name in TENSORS}
        self.width = self.tensors["mean"].shape[0] - 2  # the hidden state's width

    def to(self, device: torch.device | str) -> FallbackHead:
        return FallbackHead({name: t.to(device) for name, t in self.tensors.items()})

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        t = self.tensors
        inner = torch.relu(((features - t["mean"]) / t["std"]) @ t["w1"].T + t["b1"])
        return (inner @ t["w2"].T + t["b2"])[:, 0]

    def __call__(self, hidden: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        features = head_features(hidden, probabilities).to(self.tensors["w1"].device)
        return torch.sigmoid(self.logits(features))
