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

import contextlib
import copy
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from bild_align.errors import UserError, first_line
from bild_align.io_utils import (
    check_writable_folder,
    differing_keys,
    read_json_file,
    write_json_atomic,
    write_text_atomic,
)
from bild_align.metrics import bleu, chrf, score
from bild_align.model_card import TRAIN_RECORD
from bild_align.models import check_dtype, check_tokenizer, local_path_or_hub_id
from bild_align.recipes import PATH_KEYS, TrainRecipe
from bild_align.tasks import get_task, load_rows


def load_calibration(name: str, split: str):
    """A calibration dataset from a `calibrate` output directory or a Hub dataset id; or, with
    `task:NAME`, a benchmark's own references as targets (plain fine-tuning, e.g. to build the
    demo pair from scratch)."""
    import datasets

    if name.startswith("task:"):
        rows = load_rows(get_task(name.removeprefix("task:")), split)
        return rows.rename_column("reference", "target")
    name = local_path_or_hub_id(name, what="calibration dataset")  # a typo: said at once
    path = Path(name)
    try:
        if path.exists():
            files = sorted(str(f) for f in (path / "data").glob(f"{split}-*.parquet"))
            if not files:
                raise UserError(
                    f"{name} holds no {split} calibration data (expected data/{split}-*.parquet"
                    " written by `bild-align calibrate`)"
                )
            dataset = datasets.load_dataset("parquet", data_files=files, split="train")
        else:
            dataset = datasets.load_dataset(name, split=split)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - unknown id, no network, bad files
        nowhere = "" if path.exists() else f"there is no folder {name} here, and "
        raise UserError(
            f"could not load the calibration dataset {name} (split {split}): {nowhere}"
            f"{type(error).__name__}: {first_line(error)}"
        ) from None
    missing = {"source", "target"} - set(dataset.column_names)
    if missing:
        raise UserError(f"{name}: calibration data lacks column(s) {', '.join(sorted(missing))}")
    return dataset


def _model_and_tokenizer(recipe: TrainRecipe):
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
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
        if small_model is not None:
            extra = {} if recipe.dropout_rate is None else {"dropout_rate": recipe.dropout_rate}
            # float32 master weights whatever the checkpoint's dtype: pure float16/bfloat16
            # updates lose precision, and CPUs without float16 arithmetic run ~10x slower
            config = AutoConfig.from_pretrained(small_model)
            kind = (
                AutoModelForSeq2SeqLM
                if getattr(config, "is_encoder_decoder", False)
                else AutoModelForCausalLM
            )
            model = kind.from_pretrained(small_model, dtype=torch.float32, **extra)
        elif recipe.small_config is not None:
            model = _from_config(recipe, tokenizer)
        else:
            raise UserError("the recipe needs small_model (to fine-tune) or small_config")
    except (OSError, TypeError, ValueError) as error:
        raise UserError(f"could not build the small model: {first_line(error)}") from None
    check_tokenizer(tokenizer, model, tokenizer_name)
    if recipe.fp16:
        check_dtype(model.config.model_type, "float16", where="fp16: true, i.e.")
    return model, tokenizer


def _from_config(recipe: TrainRecipe, tokenizer):
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


@contextlib.contextmanager
def _wandb_offline_unless_logged_in(recipe: TrainRecipe) -> Iterator[None]:
    """W&B logs offline during training when nobody is logged in (it would otherwise wait for
    a login); the process environment is restored afterwards."""
    netrc = Path.home() / ".netrc"
    logged_in = "WANDB_API_KEY" in os.environ or (
        netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    )
    if recipe.report_to != "wandb" or "WANDB_MODE" in os.environ or logged_in:
        yield
        return
    print("wandb: no login found, logging offline (sync later with `wandb sync`)")
    os.environ["WANDB_MODE"] = "offline"
    try:
        yield
    finally:
        os.environ.pop("WANDB_MODE", None)


def _load_teacher(recipe: TrainRecipe, tokenizer, small_is_encoder_decoder: bool = True):
    """The large model, frozen, for the token objective, on-policy batches and the measures;
    None without large_model. Float32 like the trained weights (bfloat16 with bf16: true)."""
    if recipe.large_model is None or not (recipe.uses_teacher or recipe.measure_topk):
        return None
    from bild_align.models import check_same_tokenizer, load_seq2seq_or_causal

    try:
        teacher, teacher_tokenizer, _ = load_seq2seq_or_causal(
            recipe.large_model, dtype="bfloat16" if recipe.bf16 else "float32", device="cpu"
        )
        check_same_tokenizer(tokenizer, teacher_tokenizer)
        if teacher.config.is_encoder_decoder != small_is_encoder_decoder:
            raise UserError(
                f"large_model {recipe.large_model} and the small model are not the same kind "
                "(one encoder-decoder, one decoder-only); pair two of one kind"
            )
    except UserError as error:
        if recipe.uses_teacher:
            raise
        print(f"bild-align: warning: {error}; the alignment measures are skipped", file=sys.stderr)
        return None
    return teacher.requires_grad_(False)


RUN_FILE = TRAIN_RECORD
# Keys a resumed run may change: how long and how often, and what `eval --recipe` reads.
RESUMABLE_CHANGES = frozenset(
    {"max_steps", "eval_steps", "save_steps", "save_total_limit", "logging_steps", "report_to",
     "run_name", "per_device_eval_batch_size", "large_model", "eval_split", "rb", "fb",
     "sweep_rb", "sweep_fb", "save_dtype", "output_dir", "measure_topk"}
)  # fmt: skip


def _fingerprint(recipe: TrainRecipe) -> dict:
    """What makes a run this run; local paths are made absolute, so that `data/x` and
    `/home/me/project/data/x` are the same model."""
    resumable = RESUMABLE_CHANGES - ({"large_model"} if recipe.uses_teacher else set())
    values = {key: v for key, v in asdict(recipe).items() if key not in resumable}
    for key in PATH_KEYS:
        value = values.get(key)
        if isinstance(value, str) and Path(value).expanduser().exists():
            values[key] = str(Path(value).expanduser().resolve())
    return values


def check_output_dir(recipe: TrainRecipe, resume: bool) -> None:
    """Refuse an output_dir that holds files of another run or of the user's own, and one that
    holds this run already unless --resume continues it. Read-only: the run is recorded there
    (`record_run`) only once its inputs have loaded, so that a mistake leaves no trace."""
    output = Path(recipe.output_dir).expanduser()
    if output.exists() and not output.is_dir():
        raise UserError(f"output_dir {output} is a file; give a folder for the aligned model")
    check_writable_folder(output, "output_dir")
    run_file = output / RUN_FILE
    fingerprint = json.loads(json.dumps(_fingerprint(recipe)))
    if run_file.is_file():
        record = read_json_file(
            run_file,
            "delete it if this folder holds your training run, or choose another output_dir",
        )
        previous = record.get("fingerprint", {}) if isinstance(record, dict) else {}
        changed = differing_keys(previous, fingerprint)
        if changed:
            raise UserError(
                f"output_dir {output} holds another training run (it differs in: "
                f"{', '.join(changed)}); choose another output_dir"
            )
        if not resume:
            raise UserError(
                f"output_dir {output} holds this run already; pass --resume to continue it "
                "from its last checkpoint, or choose another output_dir"
            )
    elif output.is_dir() and any(output.iterdir()):
        raise UserError(
            f"output_dir {output} holds files that are not a bild-align training run; choose a "
            "new or empty folder"
        )


def record_run(recipe: TrainRecipe) -> None:
    """Write the run's identity into output_dir (once; a resumed run finds it there)."""
    run_file = Path(recipe.output_dir).expanduser() / RUN_FILE
    if not run_file.is_file():
        write_json_atomic(run_file, {"fingerprint": json.loads(json.dumps(_fingerprint(recipe)))})


def complete_checkpoints(output_dir: str) -> list[Path]:
    """This run's checkpoints that can be resumed from (a crash while saving leaves a partial
    one behind), oldest first."""
    found = []
    for folder in Path(output_dir).glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        weights = [folder / "model.safetensors", folder / "pytorch_model.bin"]
        has_state = (folder / "trainer_state.json").is_file() and (
            folder / "optimizer.pt"
        ).is_file()
        if step.isdigit() and has_state and any(_readable_weights(path) for path in weights):
            found.append((int(step), folder))
    return [folder for _, folder in sorted(found)]


def _readable_weights(path: Path) -> bool:
    """Whether a checkpoint's weights file is there and whole (a safetensors header that
    covers the file: a truncated file fails this check)."""
    if not path.is_file():
        return False
    if path.suffix != ".safetensors":
        return True
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt"):
            return True
    except Exception:  # noqa: BLE001 - SafetensorError and OSError alike mean "damaged"
        return False


def _resume_point(output_dir: str) -> str | None:
    checkpoints = complete_checkpoints(output_dir)
    partial = sorted(
        folder.name for folder in Path(output_dir).glob("checkpoint-*") if folder not in checkpoints
    )
    if partial:
        # moved aside, not deleted: the Trainer would count them as this run's newest
        # checkpoints and rotate the good ones away
        aside = Path(output_dir) / "incomplete-checkpoints"
        aside.mkdir(exist_ok=True)
        for name in partial:
            Path(output_dir, name).rename(aside / f"{name}-{time.time_ns()}")
        print(
            f"--resume: skipping incomplete checkpoint(s) {', '.join(partial)} (moved to "
            f"{aside}: a file is missing or its weights are truncated)"
        )
    if not checkpoints:
        print(f"--resume: no complete checkpoint in {output_dir} yet, starting from the beginning")
        return None
    print(f"--resume: continuing from {checkpoints[-1]}")
    return str(checkpoints[-1])


def run_training(
    recipe: TrainRecipe, resume: bool = False, push_to_hub: str | None = None, private: bool = False
) -> Path:
    """Align the small model as `recipe` says; returns the folder the aligned model is in.
    With `push_to_hub`, the model and its card are uploaded to that Hub repository at the end
    (token and repository are checked first)."""
    from transformers import DataCollatorForSeq2Seq

    from bild_align.alignment_trainer import AlignmentTrainer

    # No accelerate state yet: the Trainer sets up the processes itself, and a state created
    # before it changes how it shards the data. `accelerate launch` and torchrun set RANK; the
    # other processes may find the run recorded by the first, so they accept this same run.
    main_process = os.environ.get("RANK", "0") == "0"
    check_output_dir(recipe, resume=resume or not main_process)
    hub = _check_push(push_to_hub, private, recipe) if push_to_hub and main_process else None
    task = get_task(recipe.task)
    split = _split_calibration(recipe)  # before the model: a wrong path fails in seconds
    model, tokenizer = _model_and_tokenizer(recipe)
    decoder_only = not model.config.is_encoder_decoder
    if decoder_only and recipe.on_policy_fraction > 0:
        raise UserError(
            "on_policy_fraction > 0 is for encoder-decoder small models in this version; use "
            "the sequence, calibrated or token objective on the calibration rows"
        )
    generation_config = copy.deepcopy(model.generation_config)  # the Trainer edits the model's
    save_dtype = _save_dtype(recipe)
    if decoder_only:
        split = _with_prompts(split, recipe, model, tokenizer)
    train_set, eval_set = _tokenized(split, tokenizer, recipe, decoder_only)
    teacher = _load_teacher(recipe, tokenizer, not decoder_only)
    trainer = AlignmentTrainer(
        model=model,
        args=_training_arguments(recipe),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DataCollatorForSeq2Seq(_right_padding(tokenizer), model=model),
        processing_class=tokenizer,
        compute_metrics=_metrics_function(tokenizer, split["test"], task.metric),
        optimizers=_optimizers(recipe, model),
        recipe=recipe,
        teacher=teacher,
        vocab_size=len(tokenizer),
    )
    if recipe.large_model is None:
        print(
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
    with _wandb_offline_unless_logged_in(recipe):
        trainer.train(resume_from_checkpoint=checkpoint)
        final_metrics = trainer.evaluate()
    output = Path(recipe.output_dir)
    if trainer.is_world_process_zero():
        trainer.model.generation_config = generation_config
        trainer.model.to(save_dtype)
        trainer.save_model(str(output))
        tokenizer.save_pretrained(str(output))
        _record_result(recipe, trainer, final_metrics, time.monotonic() - started, resume)
        print(f"model saved to {output} (eval: {_format_metrics(final_metrics)})")
        if recipe.fallback_head:
            run_fallback_head(recipe)
        _publish(hub, output, push_to_hub)
    return output


def _check_push(repo_id: str, private: bool, recipe: TrainRecipe):
    from bild_align.hub import check_hub_access

    later = f"train without --push-to-hub and push later with `bild-align push {recipe.output_dir} --repo {repo_id}`"  # noqa: E501
    return check_hub_access(repo_id, private, repo_type="model", later=later)


def _publish(hub, output: Path, repo_id: str | None) -> None:
    """The card is written in any case (README.md); uploaded with the model when asked."""
    from bild_align.model_card import card_facts, publish_model, render_card

    if hub is None:
        write_text_atomic(output / "README.md", render_card(card_facts(output), str(output)))
        return
    print(f"pushed to {publish_model(hub, output, repo_id)}")


def _record_result(recipe: TrainRecipe, trainer, final_metrics: dict, seconds: float, resumed):
    """What the model card tells: the small model's revision, steps, time, and the held-out
    measures before training (the evaluation at step 0) and at the end."""
    from datetime import datetime, timezone

    run_file = Path(recipe.output_dir).expanduser() / RUN_FILE
    record = read_json_file(run_file, "delete it and train again")
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    before = next((entry for entry in evaluations if entry.get("step") == 0), {})
    record["result"] = {
        "recipe": json.loads(json.dumps(asdict(recipe))),
        "small_revision": _small_revision(recipe),
        "steps": trainer.state.global_step,
        "train_seconds": round(seconds, 1),
        "resumed": bool(resumed),
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "metrics_before": _numbers(before),
        "metrics_after": _numbers(final_metrics),
    }
    write_json_atomic(run_file, record)


def _numbers(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if isinstance(value, int | float)}


def _small_revision(recipe: TrainRecipe) -> str | None:
    if recipe.small_model is None:
        return None
    from transformers import AutoConfig

    from bild_align.models import local_fingerprint

    name = local_path_or_hub_id(recipe.small_model)
    if Path(name).is_dir():
        return f"local:{local_fingerprint(name)}"
    return getattr(AutoConfig.from_pretrained(name), "_commit_hash", None)


def run_fallback_head(recipe: TrainRecipe) -> Path:
    """Fit the learned fallback head of the model in the recipe's output_dir on its
    calibration rows (the held-out eval_rows excluded), and save it beside the model."""
    from bild_align.fallback_heads import train_fallback_head

    output = Path(recipe.output_dir).expanduser()
    if not (output / "config.json").is_file():
        raise UserError(
            f"--fallback-head-only needs a trained model in output_dir {output}; train it "
            "first (the same command without --fallback-head-only)"
        )
    rows = _split_calibration(recipe)["train"]
    rows = rows.select(range(min(len(rows), recipe.fallback_head_rows)))
    print(f"fitting the fallback head of {output} on {len(rows)} calibration rows")
    inputs = "prompt" if "prompt" in rows.column_names else "source"  # decoder-only: prompts
    path, report = train_fallback_head(
        output,
        list(rows[inputs]),
        list(rows["target"]),
        max_source_length=recipe.max_source_length,
        max_target_length=recipe.max_target_length,
    )
    print(
        f"fallback head saved to {path}: held-out accuracy {report['held_out_accuracy']:.3f} "
        f"(the top probability's best threshold: {report['top_probability_accuracy']:.3f}; "
        f"agreement rate {report['agreement_rate']:.3f}, {report['positions']} positions)"
    )
    return path


def _split_calibration(recipe: TrainRecipe):
    """The calibration rows as a DatasetDict: "train", and "test" (eval_rows held out)."""
    dataset = load_calibration(recipe.calibration_dataset, recipe.calibration_split)
    if len(dataset) <= recipe.eval_rows:
        raise UserError(
            f"the calibration data has {len(dataset)} rows, not more than eval_rows="
            f"{recipe.eval_rows}; lower eval_rows or calibrate more rows"
        )
    return dataset.train_test_split(test_size=recipe.eval_rows, seed=recipe.seed, shuffle=True)


def _with_prompts(split, recipe: TrainRecipe, model, tokenizer):
    """Decoder-only: a `prompt` column (calibrate writes one; else the recipe's or the task's
    template around each source)."""
    from bild_align.prompts import Prompter

    if "prompt" in split["train"].column_names:
        return split
    prompter = Prompter.for_model(
        model, get_task(recipe.task), recipe.prompt_template, recipe.chat_template
    )
    prompter.check_tokenizer(tokenizer)
    return split.map(
        lambda batch: {
            "prompt": prompter.prompt_texts(tokenizer, batch["source"], recipe.max_source_length)
        },
        batched=True,
        desc="prompts",
    )


def _right_padding(tokenizer):
    """The tokenizer for training batches: padded on the right, so that a decoder-only
    model's positions count from its first token (the saved tokenizer is left as it was)."""
    padded = copy.copy(tokenizer)
    padded.padding_side = "right"
    return padded


def _tokenized(split, tokenizer, recipe: TrainRecipe, decoder_only: bool = False) -> list:
    """The training and held-out rows as model inputs, with the large model's outputs as labels
    (decoder-only: prompt + output, the loss on the output only)."""
    from bild_align.prompts import completion_features

    def tokenize(batch):
        if decoder_only:
            return completion_features(
                tokenizer,
                batch["prompt"],
                batch["target"],
                max_target_length=recipe.max_target_length,
                chat=recipe.chat_template,
            )
        features = tokenizer(batch["source"], max_length=recipe.max_source_length, truncation=True)
        features["labels"] = tokenizer(
            text_target=batch["target"], max_length=recipe.max_target_length, truncation=True
        )["input_ids"]
        return features

    columns = split["train"].column_names
    tokenized = [
        split[name].map(tokenize, batched=True, remove_columns=columns, desc="tokenizing")
        for name in ("train", "test")
    ]
    return tokenized


def _metrics_function(tokenizer, held_out, metric: str) -> Callable:
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


def _training_arguments(recipe: TrainRecipe):
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


def _optimizers(recipe: TrainRecipe, model) -> tuple:
    """(None, None): the Trainer builds Adafactor at a relative-step-free constant rate; with
    adafactor_scale_parameter, our own Adafactor scaling updates by the parameters' RMS."""
    if not recipe.adafactor_scale_parameter:
        return None, None
    from transformers.optimization import Adafactor

    adafactor = Adafactor(
        model.parameters(),
        lr=recipe.learning_rate,
        scale_parameter=True,
        relative_step=False,
        warmup_init=False,
        weight_decay=recipe.weight_decay,
    )
    return adafactor, None


def _format_metrics(metrics: dict) -> str:
    return ", ".join(
        f"{key}={value:.4g}" for key, value in metrics.items() if isinstance(value, float)
    )


def _save_dtype(recipe: TrainRecipe):
    """The dtype asked for, else the small model checkpoint's own (float32 from scratch)."""
    import torch

    if recipe.save_dtype is not None:
        return getattr(torch, recipe.save_dtype)
    if recipe.small_model is None:
        return torch.float32
    from transformers import AutoConfig

    dtype = getattr(
        AutoConfig.from_pretrained(local_path_or_hub_id(recipe.small_model)), "dtype", None
    )
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32
