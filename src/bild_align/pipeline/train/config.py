"""`bild-align train`'s settings: the training recipe (a YAML file, `bild_align.recipes`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bild_align.core.policies import FALLBACK_THRESHOLD, ROLLBACK_THRESHOLD
from bild_align.options import finite_float, option, yaml_value
from bild_align.pipeline.base_config import DIVERGENCES, DTYPES, OBJECTIVES, Config


@dataclass
class RecipeEval(Config):
    """A training recipe's `eval:` section: what `bild-align eval --recipe` uses."""

    split: str = option("validation", "benchmark split")
    rollback_threshold: list[float] = option([ROLLBACK_THRESHOLD], "rollback threshold(s)")
    fallback_threshold: list[float] = option([FALLBACK_THRESHOLD], "fallback threshold(s)")
    sweep_rollback_thresholds: list[float] = option(
        [1.0, 2.0, 3.0, 5.0], "rollback grid for `eval --sweep`"
    )
    sweep_fallback_thresholds: list[float] = option(
        [0.3, 0.5, 0.7, 0.9], "fallback grid for `eval --sweep`"
    )

    def problems(self, section: str = "") -> list[str]:
        """Each threshold list that is empty or holds a value that is not a finite number >= 0
        (`section`: the prefix its keys are named with, e.g. "eval.")."""
        return [
            f"key '{section}{key}' must be a list of finite numbers >= 0"
            for key in (
                "rollback_threshold",
                "fallback_threshold",
                "sweep_rollback_thresholds",
                "sweep_fallback_thresholds",
            )
            if not getattr(self, key) or not all(_finite(v) and v >= 0 for v in getattr(self, key))
        ]


@dataclass
class TrainRecipe(Config):
    """Everything `bild-align train` needs; the paper's values where it gives them."""

    # what to align
    task: str = option(help="benchmark (its metric scores the held-out rows' references)")
    calibration_dataset: str = option(
        help="`bild-align calibrate` output dir, Hub dataset id, or task:NAME (its references)"
    )
    output_dir: str = option(help="where checkpoints and the aligned model go")
    small_model: str | None = option(None, "Hub id or local dir of the small model to fine-tune")
    small_config: dict | None = option(
        None,
        parse=yaml_value,
        help="T5Config fields, to train a small model from scratch (with model_type: llama, "
        "LlamaConfig fields: a decoder-only model)",
    )
    tokenizer: str | None = option(None, "tokenizer (default: the small model's)")
    large_model: str | None = option(None, "the model that made the calibration data (for eval)")
    calibration_split: str = option("train", "split of the calibration dataset")
    prompt_template: str | None = option(
        None,
        "decoder-only small models whose calibration data has no `prompt` column: the prompt "
        "around each source, with {source} (default: the task's)",
    )
    chat_template: bool = option(
        False, "decoder-only: with prompt_template, wrap prompts in the tokenizer's chat template"
    )
    # optimisation: Adafactor with a constant learning rate, effective batch size 16
    learning_rate: float = option(5e-4, "constant learning rate (paper: {0.5,1,2,5}e-4)")
    adafactor_scale_parameter: bool = option(
        False,
        "scale each update by the parameter's RMS (T5 pre-training style, for training "
        "from scratch; the learning rate is then relative, e.g. 1e-2)",
    )
    per_device_train_batch_size: int = option(16, "batch per process")
    gradient_accumulation_steps: int = option(1, "steps per optimizer update")
    max_steps: int = option(500_000, "optimizer updates (paper: 500k)")
    warmup_steps: int = option(0, "linear warm-up steps before the constant rate")
    weight_decay: float = option(0.0, "weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    dropout_rate: float | None = option(
        None, "dropout (default: the model's own)", parse=finite_float
    )
    max_source_length: int = option(256, "inputs are truncated to this many tokens")
    max_target_length: int = option(128, "targets are truncated to this many tokens")
    seed: int = option(42, "seed for initialisation, data order and the held-out rows")
    group_by_length: bool = option(False, "batch rows of similar length (less padding, faster)")
    bf16: bool = option(False, "bfloat16 mixed precision")
    fp16: bool = option(False, "float16 mixed precision (GPU)")
    # what the small model learns (DistillSpec / GKD style objectives need large_model)
    objective: str = option(
        "sequence",
        "sequence: cross-entropy on the large model's outputs (the paper's); calibrated: "
        "sequence plus calibration_weight x a confidence-calibration term (the top "
        "probability made to predict agreement with the large model: BiLD's fallback "
        "signal); token: match the large model's distributions on the same targets (a "
        "frozen teacher in each step)",
    )
    calibration_weight: float = option(
        1.0, "calibrated objective: the weight of the confidence-calibration term"
    )
    divergence: str = option(
        "forward_kl", "token objective: forward_kl, reverse_kl, tvd or jsd (generalised JSD)"
    )
    jsd_beta: float = option(0.5, "jsd's weight in (0, 1): toward forward KL near 0")
    distill_temperature: float = option(1.0, "token objective: both distributions at this T")
    on_policy_fraction: float = option(
        0.0,
        "share of batches whose targets are the small model's own decoded outputs, scored by "
        "the large model (token: its distributions; sequence: its argmax at each position)",
    )
    on_policy_sampling: bool = option(
        False, "on-policy targets sampled at temperature 1 instead of greedy"
    )
    measure_topk: int = option(
        256,
        "the large model's top-k probabilities kept per held-out position for the alignment "
        "measures (expected acceptance, confidence gap, rollback cross-entropy; 0: none)",
    )
    # evaluation and checkpoints
    eval_rows: int = option(200, "calibration rows held out for periodic evaluation")
    eval_steps: int = option(5000, "evaluate every this many steps")
    save_steps: int = option(5000, "checkpoint every this many steps (multiple of eval_steps)")
    save_total_limit: int = option(2, "checkpoints kept: the best and the last")
    logging_steps: int = option(100, "log the training loss every this many steps")
    per_device_eval_batch_size: int = option(32, "evaluation batch per process")
    # logging
    report_to: str = option("none", "none, or wandb (offline when not logged in)")
    run_name: str | None = option(None, "run name for the logger")
    # what `bild-align eval --recipe` measures the aligned model with (not used by training)
    eval: RecipeEval = option(
        RecipeEval(),
        "the recipe's eval section: split, rollback_threshold, fallback_threshold, "
        "sweep_rollback_thresholds, sweep_fallback_thresholds",
        command_line=False,
    )  # fmt: skip
    fallback_head: bool = option(
        False,
        "after training, fit the learned fallback head (`--fallback learned`) on calibration "
        "rows and save it beside the model",
    )
    fallback_head_rows: int = option(
        4000, "calibration rows the fallback head is fitted on (the first N after shuffling)"
    )
    save_dtype: str | None = option(
        None,
        "dtype of the saved model: float32, bfloat16 or float16 (default: the small model "
        "checkpoint's; training itself always keeps float32 weights)",
    )

    @property
    def uses_teacher(self) -> bool:
        """Whether training runs the large model beside the small one (else: the paper's)."""
        return self.objective == "token" or self.on_policy_fraction > 0

    def problems(self) -> list[str]:
        """Every value outside its range, as `key ...` phrases (empty when all is well)."""
        found = [
            f"key {key!r} must be {meaning}, got {getattr(self, key)!r}"
            for key, (valid, meaning) in _RANGES.items()
            if not valid(getattr(self, key))
        ]
        found += self.eval.problems(section="eval.")
        if self.save_steps % self.eval_steps:
            found.append(
                f"key 'save_steps' ({self.save_steps}) must be a multiple of 'eval_steps' "
                f"({self.eval_steps}), so that the best checkpoint can be kept"
            )
        if self.objective not in OBJECTIVES:
            found.append(f"key 'objective' must be one of {', '.join(OBJECTIVES)}")
        if self.divergence not in DIVERGENCES:
            found.append(f"key 'divergence' must be one of {', '.join(DIVERGENCES)}")
        if self.uses_teacher and self.large_model is None:
            found.append(
                "key 'large_model' is needed: the token objective and on-policy batches read "
                "the large model's distributions"
            )
        if self.bf16 and self.fp16:
            found.append("keys 'bf16' and 'fp16' cannot both be true")
        if self.prompt_template is not None and "{source}" not in self.prompt_template:
            found.append("key 'prompt_template' must hold {source}, where the source goes")
        return found


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _at_least(minimum: float) -> Callable[[Any], bool]:
    return lambda value: _finite(value) and value >= minimum


# key -> (check, what the check asks for in words)
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "learning_rate": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "per_device_train_batch_size": (_at_least(1), ">= 1"),
    "per_device_eval_batch_size": (_at_least(1), ">= 1"),
    "gradient_accumulation_steps": (_at_least(1), ">= 1"),
    "max_steps": (_at_least(1), ">= 1"),
    "warmup_steps": (_at_least(0), ">= 0"),
    "weight_decay": (_at_least(0), "a finite number >= 0"),
    "max_grad_norm": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "dropout_rate": (lambda v: v is None or (_finite(v) and 0 <= v < 1), "in [0, 1)"),
    "max_source_length": (_at_least(1), ">= 1"),
    "max_target_length": (_at_least(1), ">= 1"),
    "seed": (_at_least(0), ">= 0"),
    "eval_rows": (_at_least(1), ">= 1"),
    "eval_steps": (_at_least(1), ">= 1"),
    "save_steps": (_at_least(1), ">= 1"),
    "save_total_limit": (_at_least(1), ">= 1"),
    "logging_steps": (_at_least(1), ">= 1"),
    "report_to": (lambda v: v in ("none", "wandb"), "none or wandb"),
    "jsd_beta": (lambda v: _finite(v) and 0 < v < 1, "in (0, 1)"),
    "distill_temperature": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "calibration_weight": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "on_policy_fraction": (lambda v: _finite(v) and 0 <= v <= 1, "in [0, 1]"),
    "measure_topk": (_at_least(0), ">= 0 (0: no alignment measures)"),
    "save_dtype": (lambda v: v is None or v in DTYPES, " or ".join(DTYPES)),
}


@dataclass
class TrainRun(Config):
    """`bild-align train`'s options beside the recipe: what becomes of the run."""

    resume: bool = option(False, "continue from the last checkpoint in output_dir")
    push_to_hub: str | None = option(
        None,
        "at the end, upload the aligned model (weights, tokenizer, generation config, fallback "
        "head, tuned policy) with a model card to this Hub model repository; the token and the "
        "repository are checked before training starts",
        metavar="REPO",
    )
    private: bool = option(False, "with --push-to-hub: create it as private")
    fallback_head_only: bool = option(
        False,
        "train no model: fit the learned fallback head of the model already in output_dir on "
        "the recipe's calibration rows, and save it beside the model",
    )

    def problems(self) -> Iterator[str]:
        if self.private and not self.push_to_hub:
            yield "--private goes with --push-to-hub REPO"
        if self.fallback_head_only and (self.resume or self.push_to_hub):
            yield (
                "--fallback-head-only trains no model: leave out --resume and --push-to-hub "
                "(`bild-align push` uploads the model with its head)"
            )
