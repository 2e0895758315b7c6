"""Train, save and load the learned fallback head (`core.fallback_head.FallbackHead`).

    features, labels = head_examples(small, tokenizer, sources, targets, max_source_length=128)
    head, report = fit_head(features, labels)        # report: accuracy, base rate, rows
    save_head(small_dir, head, small_revision=..., vocab_size=..., report=report)
    head = load_fallback_head(small_dir)              # what `--fallback learned` reads
    bild_generate(small, large, ids, fallback_rule="learned", fallback_head=head, ...)

Examples come from calibration rows by teacher forcing: the small model reads the large model's
greedy output one position at a time, and a position's label is whether the small model's
argmax there is the large model's next token, which, the output being the large model's own
greedy choice, is exactly "the large model would have kept this token". No large-model pass is
needed. The head reads what the small model's output layer reads (taken with a hook, the same
tensor the lean decoder steps expose), its top probability and its entropy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from bild_align.core.fallback_head import TENSORS, FallbackHead, head_features
from bild_align.errors import UserError

HEAD_FILE = "bild_fallback_head.safetensors"


def head_examples(
    small,
    tokenizer,
    sources: Sequence[str],
    targets: Sequence[str],
    *,
    max_source_length: int = 256,
    max_target_length: int = 128,
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (positions, width + 2), labels (positions,)) over every output position of
    the rows, the one predicting the closing EOS included. For a decoder-only model `sources`
    are the prompts and the positions those that predict a target token."""
    features, labels = [], []
    captured: list[torch.Tensor] = []
    hook = small.get_output_embeddings().register_forward_hook(
        lambda _module, inputs, _output: captured.append(inputs[0])
    )
    decoder_only = not getattr(small.config, "is_encoder_decoder", False)
    try:
        with torch.inference_mode():
            for first in range(0, len(sources), batch_size):
                chunk = slice(first, first + batch_size)
                captured.clear()
                if decoder_only:  # sources are prompts; positions that predict a target token
                    logits, labels_ids = _completion_logits(
                        small, tokenizer, sources[chunk], targets[chunk], max_target_length
                    )
                    hidden = captured[-1][:, :-1]
                    real = labels_ids != -100
                else:
                    batch = tokenizer(
                        list(sources[chunk]),
                        text_target=list(targets[chunk]),
                        return_tensors="pt",
                        padding=True,
                        truncation=True,
                        max_length=max_source_length,
                    ).to(small.device)
                    labels_ids = batch["labels"][:, :max_target_length].contiguous()
                    logits = small(
                        input_ids=batch["input_ids"],
                        attention_mask=batch["attention_mask"],
                        labels=labels_ids,
                    ).logits
                    hidden = captured[-1]
                    real = labels_ids != tokenizer.pad_token_id
                probabilities = torch.softmax(logits.float(), dim=-1)[real]
                features.append(head_features(hidden[real], probabilities))
                labels.append((probabilities.argmax(-1) == labels_ids[real]).float())
    finally:
        hook.remove()
    if not features:
        raise UserError("no calibration rows to train the fallback head on")
    return torch.cat(features), torch.cat(labels)


def _completion_logits(small, tokenizer, prompts, targets, max_target_length: int):
    """A decoder-only model's logits at the positions before each target token, and those
    tokens (-100 elsewhere): the prompt + target rows training uses, right-padded."""
    from bild_align.data.prompts import completion_features

    rows = completion_features(tokenizer, prompts, targets, max_target_length=max_target_length)
    width = max(map(len, rows["input_ids"]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def padded(lists, value):
        return torch.tensor(
            [row + [value] * (width - len(row)) for row in lists], device=small.device
        )

    logits = small(
        input_ids=padded(rows["input_ids"], pad), attention_mask=padded(rows["attention_mask"], 0)
    ).logits
    return logits[:, :-1], padded(rows["labels"], -100)[:, 1:]


def fit_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    hidden_units: int = 64,
    steps: int = 400,
    learning_rate: float = 3e-3,
    held_out: float = 0.1,
    seed: int = 0,
) -> tuple[FallbackHead, dict]:
    """Fit a one-hidden-layer classifier with Adam on all but `held_out` of the positions;
    report its held-out accuracy beside the top probability's best threshold accuracy."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    cut = max(1, int(len(labels) * held_out))
    test, train = order[:cut], order[cut:]
    mean = features[train].mean(0)
    std = features[train].std(0).clamp(min=1e-6)
    width = features.shape[1]
    w1 = (torch.randn(hidden_units, width, generator=generator) / width**0.5).requires_grad_()
    b1 = torch.zeros(hidden_units, requires_grad=True)
    w2 = (torch.randn(1, hidden_units, generator=generator) / hidden_units**0.5).requires_grad_()
    b2 = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([w1, b1, w2, b2], lr=learning_rate)
    x, y = features[train], labels[train]
    with torch.enable_grad():
        for _ in range(steps):
            batch = torch.randint(0, len(y), (min(len(y), 4096),), generator=generator)
            head = FallbackHead({"mean": mean, "std": std, "w1": w1, "b1": b1, "w2": w2, "b2": b2})
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                head.logits(x[batch]), y[batch]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    tensors = {"mean": mean, "std": std, "w1": w1, "b1": b1, "w2": w2, "b2": b2}
    head = FallbackHead({name: tensor.detach().clone() for name, tensor in tensors.items()})
    with torch.no_grad():
        predicted = torch.sigmoid(head.logits(features[test])) >= 0.5
    accuracy = float((predicted == labels[test].bool()).float().mean())
    top = features[test, -2]
    best_top = max(
        float(((top >= threshold) == labels[test].bool()).float().mean())
        for threshold in torch.linspace(0, 1, 101).tolist()
    )
    return head, {
        "positions": len(labels),
        "agreement_rate": float(labels.mean()),
        "held_out_accuracy": accuracy,
        "top_probability_accuracy": best_top,
    }


def save_head(
    small_dir: str | Path, head: FallbackHead, *, small_revision: str, vocab_size: int, report: dict
) -> Path:
    from safetensors.torch import save_file

    path = Path(small_dir) / HEAD_FILE
    metadata = {
        "small_revision": small_revision,
        "vocab_size": str(vocab_size),
        "width": str(head.width),
        "report": json.dumps(report),
    }
    scratch = path.with_name(path.name + ".tmp")
    save_file({name: t.contiguous().cpu() for name, t in head.tensors.items()}, scratch, metadata)
    scratch.replace(path)  # atomic: a crash leaves the old head or the new one
    return path


def load_fallback_head(
    small_dir: str | Path,
    small_revision: str | None = None,
    width: int | None = None,
    rule_from: str = "option",
) -> FallbackHead:
    """The head saved beside the small model; refused (UserError) when missing, damaged, or
    trained for another revision or width of the small model. `rule_from` says who asked for
    the learned rule ("option": --fallback learned; "policy": a saved policy), for the message."""
    from safetensors import safe_open

    path = Path(small_dir).expanduser() / HEAD_FILE
    if not path.is_file():
        who = (
            f"the tuned policy in {Path(small_dir) / 'bild_policy.json'} uses the learned "
            "fallback rule, which"
            if rule_from == "policy"
            else "--fallback learned"
        )
        raise UserError(
            f"{who} needs a fallback head in {small_dir} ({HEAD_FILE}); train one "
            "with `bild-align train --recipe R --fallback-head-only` (or fallback_head: true)"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in TENSORS}
        head = FallbackHead(tensors)
    except Exception as error:  # noqa: BLE001 - truncated or foreign file
        raise UserError(f"{path} is damaged ({error}); train the head again") from None
    trained_for = metadata.get("small_revision")
    if small_revision is not None and trained_for not in (None, small_revision):
        raise UserError(
            f"{path} was trained for another version of this small model ({trained_for}, now "
            f"{small_revision}); train the head again (`--fallback-head-only`)"
        )
    if width is not None and head.width != width:
        raise UserError(f"{path} reads {head.width}-wide hidden states; this model's are {width}")
    return head


def train_fallback_head(
    model_dir: str | Path,
    sources: Sequence[str],
    targets: Sequence[str],
    *,
    max_source_length: int = 256,
    max_target_length: int = 128,
    device: str = "auto",
) -> tuple[Path, dict]:
    """Fit and save the head of the small model in `model_dir` on calibration rows (the large
    model's outputs as targets); returns the file and the report."""
    from bild_align.models.loading import load_seq2seq_or_causal

    small, tokenizer, revision = load_seq2seq_or_causal(str(model_dir), device=device)
    features, labels = head_examples(
        small,
        tokenizer,
        sources,
        targets,
        max_source_length=max_source_length,
        max_target_length=max_target_length,
    )
    head, report = fit_head(features, labels)
    path = save_head(
        model_dir, head, small_revision=revision, vocab_size=len(tokenizer), report=report
    )
    return path, report
