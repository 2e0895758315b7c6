"""The alignment trainer: transformers' Seq2SeqTrainer with BiLD's objectives and measures.

    trainer = AlignmentTrainer(model=small, args=..., recipe=recipe, teacher=large_or_None,
                               vocab_size=len(tokenizer), train_dataset=..., eval_dataset=...)
    trainer.train()

The objective comes from the recipe: `sequence` (the paper's: the Trainer's own loss on the
large model's outputs), `calibrated` (that plus a confidence-calibration term), `token`
(distributions of a frozen large model in each step), and on-policy batches (the small model's
own outputs, labelled by the large model). `bild_align.pipeline.train.distill` holds the arithmetic.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch.utils.data import SequentialSampler
from transformers import Seq2SeqTrainer

from bild_align.configs import TrainRecipe
from bild_align.models.loading import plain_generation_config
from bild_align.pipeline.train.distill import (
    TopK,
    alignment_measures,
    confidence_calibration,
    measure_sums,
    token_divergence,
)


class AlignmentTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer that can distil from a frozen large model and measures, at every
    evaluation, how well the small model's distributions serve BiLD (`train/distill.py`).

    With the paper's objective (sequence, no on-policy batches) the loss is the Trainer's
    own. Evaluation keeps the dataset order even when training groups rows by length: the
    metrics pair each prediction with its row's large-model output by position."""

    def __init__(self, *args, recipe: TrainRecipe, teacher=None, vocab_size: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.recipe, self.teacher, self.vocab_size = recipe, teacher, vocab_size
        # a decoder-only model's logits at position t predict the token at t + 1
        self.decoder_only = not getattr(self.model.config, "is_encoder_decoder", False)
        if teacher is not None:
            teacher.to(self.args.device)  # once, not in every step
        self.held_out: list[tuple[dict, TopK]] = []
        if recipe.uses_teacher:
            self.loss_is_scaled_for_ga = False  # our losses are per-batch means
        # every setting in the one config passed: generation settings given beside a
        # generation_config are deprecated in transformers 5
        self.on_policy_generation = plain_generation_config(self.model)
        self.on_policy_generation.update(
            max_new_tokens=recipe.max_target_length,
            do_sample=recipe.on_policy_sampling,
            top_k=0,
            temperature=1.0,
        )
        self.evaluation_generation = plain_generation_config(self.model)
        self.evaluation_generation.update(
            max_new_tokens=recipe.max_target_length, do_sample=False, num_beams=1
        )

    def _get_eval_sampler(self, eval_dataset):
        if eval_dataset is None:
            return None
        return SequentialSampler(eval_dataset)  # accelerate shards it across processes

    def remember_teacher_on_held_out(self) -> None:
        """The large model's top-k distributions on the held-out rows, once per run."""
        dataset = self.eval_dataset
        size = self.args.per_device_eval_batch_size
        for start in range(0, len(dataset), size):
            rows = [dataset[i] for i in range(start, min(start + size, len(dataset)))]
            batch = self._prepare_inputs(self.data_collator(rows))
            with torch.no_grad():
                logits = self._predicting(self.teacher(**_model_inputs(batch)).logits)
            top = TopK.of(logits, self.recipe.measure_topk, self.vocab_size)
            self.held_out.append(({k: v.cpu() for k, v in batch.items()}, top.to("cpu")))

    def evaluate(self, *args, metric_key_prefix: str = "eval", **kwargs) -> dict:
        metrics = super().evaluate(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        if self.held_out:
            measures = {
                f"{metric_key_prefix}_{key}": value
                for key, value in self._alignment_measures().items()
            }
            self.log(measures)
            metrics.update(measures)
        return metrics

    def _alignment_measures(self) -> dict[str, float]:
        model, was_training = self.model, self.model.training
        model.eval()
        sums = []
        with torch.no_grad():
            for batch, top in self.held_out:
                batch = self._prepare_inputs(batch)
                logits = self._predicting(model(**_model_inputs(batch)).logits)
                mask = self._targets(batch["labels"]) != -100
                sums.append(measure_sums(logits, top.to(logits.device), mask, self.vocab_size))
        model.train(was_training)
        return alignment_measures(sums)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.recipe.objective == "calibrated" and not self.recipe.uses_teacher:
            inputs = _model_inputs(inputs)
            outputs = model(**inputs)
            labels = self._targets(inputs["labels"])
            logits = self._predicting(outputs.logits)
            term = confidence_calibration(logits[..., : self.vocab_size], labels, labels != -100)
            loss = outputs.loss + self.recipe.calibration_weight * term
            return (loss, outputs) if return_outputs else loss
        if not self.recipe.uses_teacher:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = _model_inputs(inputs)
        on_policy = model.training and self._on_policy_now()
        if on_policy:
            inputs["labels"] = self._own_outputs(model, inputs)
        outputs = model(**inputs)
        if self.recipe.objective in ("sequence", "calibrated") and not on_policy:
            loss = outputs.loss
        else:
            loss = self._distillation_loss(outputs.logits, inputs)
        return (loss, outputs) if return_outputs else loss

    def _distillation_loss(self, logits, inputs):
        with torch.no_grad():
            teacher_logits = self._predicting(self.teacher(**inputs).logits)
        logits = self._predicting(logits)
        mask = self._targets(inputs["labels"]) != -100
        if self.recipe.objective == "token":
            return token_divergence(
                logits[..., : self.vocab_size],
                teacher_logits[..., : self.vocab_size],
                mask,
                self.recipe.divergence,
                beta=self.recipe.jsd_beta,
                temperature=self.recipe.distill_temperature,
            )
        # sequence objective on the small model's own prefixes: the large model's choice
        targets = teacher_logits[..., : self.vocab_size].argmax(-1)
        return F.cross_entropy(logits[..., : self.vocab_size][mask].float(), targets[mask])

    def _predicting(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits at the positions that predict the labels (`_targets`)."""
        return logits[:, :-1] if self.decoder_only else logits

    def _targets(self, labels: torch.Tensor) -> torch.Tensor:
        return labels[:, 1:] if self.decoder_only else labels

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        """Decoder-only rows hold prompt + target: the loss is the forward's on them; the
        prediction is the greedy completion of the prompt alone (left-padded, as generate
        needs), which `compute_metrics` compares with the large model's output."""
        if not self.decoder_only or prediction_loss_only or not self.args.predict_with_generate:
            return super().prediction_step(
                model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs
            )
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = model(**_model_inputs(inputs)).loss.detach()
            prompts = [
                row[(labels == -100) & (mask > 0)]
                for row, labels, mask in zip(
                    inputs["input_ids"], inputs["labels"], inputs["attention_mask"], strict=True
                )
            ]
            width = max(len(prompt) for prompt in prompts)
            pad = self.on_policy_generation.pad_token_id or 0
            ids = torch.full((len(prompts), width), pad, device=inputs["input_ids"].device)
            mask = torch.zeros_like(ids)
            for place, prompt in enumerate(prompts):
                ids[place, width - len(prompt) :], mask[place, width - len(prompt) :] = prompt, 1
            small = self.accelerator.unwrap_model(model)
            generated = small.generate(
                input_ids=ids, attention_mask=mask, generation_config=self.evaluation_generation
            )
        return loss, generated[:, width:], inputs["labels"]

    def _on_policy_now(self) -> bool:
        """Seeded per optimizer step, so that a rerun draws the same batches."""
        fraction = self.recipe.on_policy_fraction
        draw = random.Random(f"{self.recipe.seed}/{self.state.global_step}").random()
        return fraction > 0 and draw < fraction

    def _own_outputs(self, model, inputs) -> torch.Tensor:
        """The small model's decoded outputs for these inputs, as labels."""
        small = self.accelerator.unwrap_model(model)
        small.eval()
        # max_new_tokens bounds the output; the model's own max_length (which the Trainer sets)
        # would make transformers warn at every on-policy step that both are set
        saved_max_length = small.generation_config.max_length
        small.generation_config.max_length = None
        try:
            with torch.no_grad():
                generated = small.generate(
                    input_ids=inputs["input_ids"],
                    attention_mask=inputs["attention_mask"],
                    generation_config=self.on_policy_generation,
                )
        finally:
            small.generation_config.max_length = saved_max_length
            small.train()
        labels = generated[:, 1:].clone()  # without the decoder start token
        is_eos = labels == small.config.eos_token_id
        after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
        labels[after_eos] = -100
        return labels


def _model_inputs(batch: dict) -> dict:
    """A collated batch as the model's arguments: the model shifts the labels into decoder
    inputs itself (on-policy batches replace the labels)."""
    return {key: value for key, value in batch.items() if key != "decoder_input_ids"}
