"""What `bild-align train` builds from a recipe before training: the small model and its
tokenizer (fine-tuned, or new from `small_config`), the Trainer's arguments and optimizer, the
held-out metrics, and the dtype the aligned model is saved in.

    model, tokenizer = model_and_tokenizer(recipe)
    arguments = training_arguments(recipe)
    optimizer = adafactor_optimizers(recipe, model)
    compute_metrics = metrics_function(tokenizer, held_out, task.metric)
    teacher = load_teacher(recipe, tokenizer)     # the frozen large model, or None
    with wandb_offline_unless_logged_in(recipe): trainer.train()
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from bild_align.configs import TrainRecipe
from bild_align.errors import UserError, first_line
from bild_align.measure.metrics import bleu, chrf, score
from bild_align.models.loading import (
    check_dtype,
    check_tokenizer,
    hub_options,
    local_path_or_hub_id,
)

logger = logging.getLogger(__name__)


def model_and_tokenizer(recipe: TrainRecipe):
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
    )

    small_model, tokenizer_name = (
        None if name is None else local_path_or_hub_id(name, what=key)
        for key, name in (("small_model", recipe.small_model), ("tokenizer", recipe.tokenizer))
    )
    tokenizer_name = tokenizer_name or small_model
    if tokenizer_name is None:
        raise UserError("the recipe needs small_model, or small_config with tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name, **hub_options(tokenizer_name))
        if small_model is not None:
            extra = {} if recipe.dropout_rate is None else {"dropout_rate": recipe.dropout_rate}
            # float32 master weights whatever the checkpoint's dtype: pure float16/bfloat16
            # updates lose precision, and CPUs without float16 arithmetic run ~10x slower
            config = AutoConfig.from_pretrained(small_model, **hub_options(small_model))
            kind = (
                AutoModelForSeq2SeqLM
                if getattr(config, "is_encoder_decoder", False)
                else AutoModelForCausalLM
            )
            extra.update(hub_options(small_model))
            model = kind.from_pretrained(small_model, dtype=torch.float32, **extra)
        elif recipe.small_config is not None:
            model = model_from_config(recipe, tokenizer)
        else:
            raise UserError("the recipe needs small_model (to fine-tune) or small_config")
    except (OSError, TypeError, ValueError) as error:
        raise UserError(f"could not build the small model: {first_line(error)}") from None
    check_tokenizer(tokenizer, model, tokenizer_name)
    if small_model is not None:
        freeze_shared_encoder(model, small_model)
    if recipe.fp16:
        check_dtype(model.config.model_type, "float16", where="fp16: true, i.e.")
    return model, tokenizer


def freeze_shared_encoder(model, folder: str) -> bool:
    """A drafter sharing the large model's encoder keeps it: its encoder (with the input
    embedding it holds) is frozen, so that the trained drafter still shares it."""
    from bild_align.models.drafters import read_record

    record = read_record(folder)
    if record is None or record.get("shares") != "encoder":
        return False
    for parameter in model.get_encoder().parameters():
        parameter.requires_grad_(False)
    logger.info(
        "bild-align: %s is a drafter sharing the large model's encoder: the encoder stays "
        "frozen, the decoder trains",
        folder,
    )
    return True


def model_from_config(recipe: TrainRecipe, tokenizer):
    """A new model from `small_config`: T5Config fields, or with `model_type: llama` a
    decoder-only Llama (LlamaConfig fields); the tokenizer's size and special tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    fields = dict(recipe.small_config)
    special = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if fields.pop("model_type", "t5") == "llama":
        if recipe.dropout_rate is not None:
            fields.setdefault("attention_dropout", recipe.dropout_rate)
        config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=None, **special, **fields)
        return LlamaForCausalLM(config)
    if recipe.dropout_rate is not None:
        fields["dropout_rate"] = recipe.dropout_rate
    config = T5Config(
        vocab_size=len(tokenizer),
        decoder_start_token_id=tokenizer.pad_token_id,
        **special,
        **fields,
    )
    return T5ForConditionalGeneration(config)


def metrics_function(tokenizer, held_out, metric: str) -> Callable:
    """The Trainer's compute_metrics: agreement of the small model's greedy outputs on the
    held-out rows with the large model's, and the task metric against references if any."""
    large_outputs = held_out["target"]
    references = held_out["reference"] if "reference" in held_out.column_names else []

    def compute_metrics(prediction) -> dict[str, float]:
        ids = prediction.predictions
        ids = ids.clip(min=0) if hasattr(ids, "clip") else ids
        # Several processes gather their batches in the dataset's order; the last ones are
        # padded with repeated rows to even batch sizes, which are dropped here.
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)[: len(large_outputs)]
        result = {
            "agreement_bleu": bleu(texts, large_outputs)["score"],
            "agreement_chrf": chrf(texts, large_outputs)["score"],
            "agreement_exact": sum(a == b for a, b in zip(texts, large_outputs, strict=True))
            / len(texts),
        }
        if any(references):
            result[f"reference_{metric}"] = score(metric, texts, references)["score"]
        return result

    return compute_metrics


def training_arguments(recipe: TrainRecipe):
    from transformers import Seq2SeqTrainingArguments

    return Seq2SeqTrainingArguments(
        output_dir=recipe.output_dir,
        optim="adafactor",
        learning_rate=recipe.learning_rate,
        lr_scheduler_type="constant_with_warmup" if recipe.warmup_steps else "constant",
        warmup_steps=recipe.warmup_steps,
        weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.max_grad_norm,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        per_device_eval_batch_size=recipe.per_device_eval_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        max_steps=recipe.max_steps,
        eval_strategy="steps",
        eval_steps=recipe.eval_steps,
        eval_on_start=True,  # the "before" figures: agreement of the unaligned model
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        load_best_model_at_end=True,
        # the token objective aims at distributions, the paper's at the greedy outputs
        metric_for_best_model="expected_acceptance"
        if recipe.objective == "token" and recipe.measure_topk
        else "agreement_bleu",
        greater_is_better=True,
        logging_steps=recipe.logging_steps,
        predict_with_generate=True,
        generation_max_length=recipe.max_target_length,
        generation_num_beams=1,
        bf16=recipe.bf16,
        fp16=recipe.fp16,
        seed=recipe.seed,
        data_seed=recipe.seed,
        train_sampling_strategy="group_by_length" if recipe.group_by_length else "random",
        report_to=[] if recipe.report_to == "none" else [recipe.report_to],
        run_name=recipe.run_name,
        dataloader_num_workers=0,
    )


def adafactor_optimizers(recipe: TrainRecipe, model) -> tuple:
    """(None, None): the Trainer builds Adafactor at a relative-step-free constant rate; with
    adafactor_scale_parameter, our own Adafactor scaling updates by the parameters' RMS."""
    if not recipe.adafactor_scale_parameter:
        return None, None
    from transformers.optimization import Adafactor

    adafactor = Adafactor(
        [parameter for parameter in model.parameters() if parameter.requires_grad],
        lr=recipe.learning_rate,
        scale_parameter=True,
        relative_step=False,
        warmup_init=False,
        weight_decay=recipe.weight_decay,
    )
    return adafactor, None


def save_dtype(recipe: TrainRecipe):
    """The dtype asked for, else the small model checkpoint's own (float32 from scratch)."""
    import torch

    if recipe.save_dtype is not None:
        return getattr(torch, recipe.save_dtype)
    if recipe.small_model is None:
        return torch.float32
    from transformers import AutoConfig

    name = local_path_or_hub_id(recipe.small_model)
    dtype = getattr(AutoConfig.from_pretrained(name, **hub_options(name)), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def load_teacher(recipe: TrainRecipe, tokenizer, small_is_encoder_decoder: bool = True):
    """The large model, frozen, for the token objective, on-policy batches and the measures;
    None without large_model. Float32 like the trained weights (bfloat16 with bf16: true).
    UserError when it cannot serve (the stage decides whether training goes on without it)."""
    if recipe.large_model is None or not (recipe.uses_teacher or recipe.measure_topk):
        return None
    from bild_align.models.loading import check_same_tokenizer, load_seq2seq_or_causal

    teacher, teacher_tokenizer, _ = load_seq2seq_or_causal(
        recipe.large_model, dtype="bfloat16" if recipe.bf16 else "float32", device="cpu"
    )
    check_same_tokenizer(tokenizer, teacher_tokenizer)
    if teacher.config.is_encoder_decoder != small_is_encoder_decoder:
        raise UserError(
            f"large_model {recipe.large_model} and the small model are not the same kind "
            "(one encoder-decoder, one decoder-only); pair two of one kind"
        )
    return teacher.requires_grad_(False)


@contextlib.contextmanager
def wandb_offline_unless_logged_in(recipe: TrainRecipe) -> Iterator[None]:
    """W&B logs offline during training when nobody is logged in (it would otherwise wait for
    a login); the process environment is restored afterwards."""
    netrc = Path.home() / ".netrc"
    logged_in = "WANDB_API_KEY" in os.environ or (
        netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    )
    if recipe.report_to != "wandb" or "WANDB_MODE" in os.environ or logged_in:
        yield
        return
    logger.info("wandb: no login found, logging offline (sync later with `wandb sync`)")
    os.environ["WANDB_MODE"] = "offline"
    try:
        yield
    finally:
        os.environ.pop("WANDB_MODE", None)
