"""Stage two: align the small model to the large one by fine-tuning it on calibration data.

    bild-align train --recipe recipes/iwslt.yaml [--max-steps 100 --learning-rate 1e-4]
    accelerate launch --num_processes 2 -m bild_align.cli train --recipe recipes/tiny.yaml

    run_training(load_recipe("recipes/tiny.yaml"))

Sequence-level distillation ("prediction alignment" in the paper): the targets are the large
model's greedy outputs from `bild-align calibrate`. Built on transformers' `Seq2SeqTrainer`,
which brings Adafactor, gradient accumulation, mixed precision, checkpoints and their resume,
W&B reporting and multi-process runs through accelerate. Periodic evaluation on held-out
calibration rows reports the loss, the agreement with the large model (BLEU of the small
model's greedy output against the large model's) and, where the rows carry references, the
task's metric against them; the checkpoint with the best agreement is kept beside the last.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

from bild_align.configs import TrainRecipe
from bild_align.data.calibration import right_padding, split_calibration, tokenized, with_prompts
from bild_align.data.tasks import get_task
from bild_align.errors import UserError
from bild_align.models.drafters import keep_drafter_record
from bild_align.pipeline.train.runs import check_output_dir, record_result, record_run, resume_point
from bild_align.pipeline.train.setup import (
    adafactor_optimizers,
    load_teacher,
    metrics_function,
    model_and_tokenizer,
    save_dtype,
    training_arguments,
    wandb_offline_unless_logged_in,
)
from bild_align.reporting import report
from bild_align.runs.files import write_text_atomic


def _resume_point(output_dir: str) -> str | None:
    checkpoint, skipped, aside = resume_point(output_dir)
    if skipped:
        report(
            f"--resume: skipping incomplete checkpoint(s) {', '.join(skipped)} (moved to "
            f"{aside}: a file is missing or its weights are truncated)"
        )
    if checkpoint is None:
        report(f"--resume: no complete checkpoint in {output_dir} yet, starting from the beginning")
    else:
        report(f"--resume: continuing from {checkpoint}")
    return checkpoint


def run_training(
    recipe: TrainRecipe, resume: bool = False, push_to_hub: str | None = None, private: bool = False
) -> Path:
    """Align the small model as `recipe` says; returns the folder the aligned model is in.
    With `push_to_hub`, the model and its card are uploaded to that Hub repository at the end
    (token and repository are checked first)."""
    from transformers import DataCollatorForSeq2Seq

    from bild_align.pipeline.train.trainer import AlignmentTrainer

    # No accelerate state yet: the Trainer sets up the processes itself, and a state created
    # before it changes how it shards the data. `accelerate launch` and torchrun set RANK; the
    # other processes may find the run recorded by the first, so they accept this same run.
    main_process = os.environ.get("RANK", "0") == "0"
    check_output_dir(recipe, resume=resume or not main_process)
    hub = _check_push(push_to_hub, private, recipe) if push_to_hub and main_process else None
    task = get_task(recipe.task)
    split = split_calibration(recipe)  # before the model: a wrong path fails in seconds
    model, tokenizer = model_and_tokenizer(recipe)
    decoder_only = not model.config.is_encoder_decoder
    if decoder_only and recipe.on_policy_fraction > 0:
        raise UserError(
            "on_policy_fraction > 0 is for encoder-decoder small models in this version; use "
            "the sequence, calibrated or token objective on the calibration rows"
        )
    generation_config = copy.deepcopy(model.generation_config)  # the Trainer edits the model's
    saved_dtype = save_dtype(recipe)
    if decoder_only:
        split = with_prompts(split, recipe, model, tokenizer)
    train_set, eval_set = tokenized(split, tokenizer, recipe, decoder_only)
    try:
        teacher = load_teacher(recipe, tokenizer, not decoder_only)
    except UserError as error:
        if recipe.uses_teacher:
            raise
        report(f"bild-align: warning: {error}; the alignment measures are skipped", stderr=True)
        teacher = None
    trainer = AlignmentTrainer(
        model=model,
        args=training_arguments(recipe),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DataCollatorForSeq2Seq(right_padding(tokenizer), model=model),
        processing_class=tokenizer,
        compute_metrics=metrics_function(tokenizer, split["test"], task.metric),
        optimizers=adafactor_optimizers(recipe, model),
        recipe=recipe,
        teacher=teacher,
        vocab_size=len(tokenizer),
    )
    if recipe.large_model is None:
        report(
            "no large_model in the recipe: the alignment measures (expected acceptance, ...)"
            " are not computed"
        )
    if teacher is not None and recipe.measure_topk:
        trainer.remember_teacher_on_held_out()
        if not recipe.uses_teacher:
            trainer.teacher = teacher = None  # only the measures needed it
    if main_process:
        record_run(recipe)
    checkpoint = _resume_point(recipe.output_dir) if resume else None
    started = time.monotonic()
    with wandb_offline_unless_logged_in(recipe):
        trainer.train(resume_from_checkpoint=checkpoint)
        final_metrics = trainer.evaluate()
    output = Path(recipe.output_dir)
    if trainer.is_world_process_zero():
        trainer.model.generation_config = generation_config
        trainer.model.to(saved_dtype)
        trainer.save_model(str(output))
        tokenizer.save_pretrained(str(output))
        keep_drafter_record(recipe.small_model, output)  # the encoder is still the large one's
        record_result(recipe, trainer, final_metrics, time.monotonic() - started, resume)
        report(f"model saved to {output} (eval: {_format_metrics(final_metrics)})")
        if recipe.fallback_head:
            run_fallback_head(recipe)
        _publish(hub, output, push_to_hub)
    return output


def _check_push(repo_id: str, private: bool, recipe: TrainRecipe):
    from bild_align.runs.hub import check_hub_access

    later = f"train without --push-to-hub and push later with `bild-align push {recipe.output_dir} --repo {repo_id}`"  # noqa: E501
    return check_hub_access(repo_id, private, repo_type="model", later=later)


def _publish(hub, output: Path, repo_id: str | None) -> None:
    """The card is written in any case (README.md); uploaded with the model when asked."""
    from bild_align.runs.model_card import card_facts, publish_model, render_card

    if hub is None:
        write_text_atomic(output / "README.md", render_card(card_facts(output), str(output)))
        return
    report(f"pushed to {publish_model(hub, output, repo_id)}")


def run_fallback_head(recipe: TrainRecipe) -> Path:
    """Fit the learned fallback head of the model in the recipe's output_dir on its
    calibration rows (the held-out eval_rows excluded), and save it beside the model."""
    from bild_align.models.fallback_heads import train_fallback_head

    output = Path(recipe.output_dir).expanduser()
    if not (output / "config.json").is_file():
        raise UserError(
            f"--fallback-head-only needs a trained model in output_dir {output}; train it "
            "first (the same command without --fallback-head-only)"
        )
    rows = split_calibration(recipe)["train"]
    rows = rows.select(range(min(len(rows), recipe.fallback_head_rows)))
    report(f"fitting the fallback head of {output} on {len(rows)} calibration rows")
    inputs = "prompt" if "prompt" in rows.column_names else "source"  # decoder-only: prompts
    path, fit = train_fallback_head(
        output,
        list(rows[inputs]),
        list(rows["target"]),
        max_source_length=recipe.max_source_length,
        max_target_length=recipe.max_target_length,
    )
    report(
        f"fallback head saved to {path}: held-out accuracy {fit['held_out_accuracy']:.3f} "
        f"(the top probability's best threshold: {fit['top_probability_accuracy']:.3f}; "
        f"agreement rate {fit['agreement_rate']:.3f}, {fit['positions']} positions)"
    )
    return path


def _format_metrics(metrics: dict) -> str:
    return ", ".join(
        f"{key}={value:.4g}" for key, value in metrics.items() if isinstance(value, float)
    )
