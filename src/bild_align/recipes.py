"""YAML recipes parsed into dataclasses: built-in defaults < recipe file < command line.

    recipe = load_recipe("recipes/iwslt.yaml", overrides={"learning_rate": 1e-4})
    recipe.learning_rate      # 1e-4: the command line wins
    add_recipe_arguments(parser, TrainRecipe)   # --learning-rate, --max-steps, ... for every field

Unknown keys, values of the wrong type and missing required keys are errors (`RecipeError`,
a `UserError`) that name the key and the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bild_align.configs import DIVERGENCES, OBJECTIVES
from bild_align.core.policies import FALLBACK_THRESHOLD, ROLLBACK_THRESHOLD
from bild_align.errors import UserError
from bild_align.options import help_of, option

logger = logging.getLogger(__name__)  # notes; the command line shows them on stderr


class RecipeError(UserError):
    pass


@dataclass
class TrainRecipe:
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
        "T5Config fields, to train a small model from scratch (with model_type: llama, "
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
    dropout_rate: float | None = option(None, "dropout (default: the model's own)")
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
    # thresholds that `bild-align eval --recipe` uses
    eval_split: str = option("validation", "benchmark split that `eval --recipe` uses")
    rb: list[float] = option([ROLLBACK_THRESHOLD], "rollback threshold(s) for `eval --recipe`")
    fb: list[float] = option([FALLBACK_THRESHOLD], "fallback threshold(s) for `eval --recipe`")
    sweep_rb: list[float] = option(
        [1.0, 2.0, 3.0, 5.0], "rollback grid for `eval --recipe --sweep`"
    )
    sweep_fb: list[float] = option(
        [0.3, 0.5, 0.7, 0.9], "fallback grid for `eval --recipe --sweep`"
    )
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
        for key in ("rb", "fb", "sweep_rb", "sweep_fb"):
            if not getattr(self, key) or not all(_finite(v) and v >= 0 for v in getattr(self, key)):
                found.append(f"key {key!r} must be a list of finite numbers >= 0")
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
    "save_dtype": (
        lambda v: v in (None, "float32", "bfloat16", "float16"),
        "float32, bfloat16 or float16",
    ),
}


def _type_ok(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Check (and gently coerce) a YAML value against a field's annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(annotation):
            return True, None
        for option in typing.get_args(annotation):
            if option is not type(None):
                ok, coerced = _type_ok(value, option)
                if ok:
                    return True, coerced
        return False, value
    if origin in (list, tuple):
        item_type = typing.get_args(annotation)[0]  # list[X] or tuple[X, ...]
        if not isinstance(value, list | tuple):
            value = [value]
        checked = [_type_ok(item, item_type) for item in value]
        return all(ok for ok, _ in checked), origin(item for _, item in checked)
    if annotation is dict or origin is dict:
        return isinstance(value, dict), value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if annotation is str:
        return isinstance(value, str), value
    return True, value


def _type_name(annotation: Any) -> str:
    """The type in a user's words: true or false, a list of numbers, ..."""
    words = {
        bool: "true or false",
        list[float]: "a list of numbers (e.g. 1,2,3 on the command line)",
    }
    if annotation in words:
        return words[annotation]
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def check_values(recipe_class: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` with each key known to `recipe_class` and of its field's type (coerced gently:
    5e-4 read as text becomes a float, a list becomes a tuple); errors name the key and `source`."""
    hints = typing.get_type_hints(recipe_class)
    fields = [f.name for f in dataclasses.fields(recipe_class)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise RecipeError(
            f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(fields)}"
        )
    checked = {}
    for key, value in values.items():
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            raise RecipeError(
                f"{source}: key {key!r} must be {_type_name(hints[key])}, got {value!r}"
            )
        checked[key] = coerced
    return checked


def build(recipe_class: type, values: dict[str, Any], source: str) -> Any:
    """An instance of `recipe_class` from `values`, with errors naming the key and `source`."""
    checked = check_values(recipe_class, values, source)
    fields = {f.name: f for f in dataclasses.fields(recipe_class)}
    missing = [
        name
        for name, f in fields.items()
        if name not in checked
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecipeError(f"{source}: missing required key(s) {', '.join(missing)}")
    recipe = recipe_class(**checked)
    problems = recipe.problems() if hasattr(recipe, "problems") else []
    if problems:
        raise RecipeError(f"{source}: {problems[0]}")
    return recipe


# Recipe keys that name a file, a folder or a model: a relative value written "./x" or "../x"
# is relative to the recipe file; any other relative value to the working directory.
PATH_KEYS = (
    *("task", "calibration_dataset", "output_dir", "small_model", "tokenizer", "large_model"),
    *("small", "large", "output"),  # an eval recipe's
)


def find_recipe(path: str | Path) -> Path:
    """`path`, or the shipped recipe of that name (`recipes/demo-align.yaml` or `demo-align`)
    when no such file exists here: the recipes also work from outside the checkout."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    from bild_align.resources import shipped

    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    builtin = shipped(f"recipes/{name}")
    if builtin is None or path.parent.name not in ("", "recipes"):
        raise RecipeError(f"recipe {path} does not exist")
    logger.info("bild-align: using the built-in recipe %s", builtin)
    return builtin


def resolve_paths(values: dict[str, Any], recipe_file: Path) -> dict[str, Any]:
    """Values of PATH_KEYS written "./x" or "../x", made relative to the recipe's folder."""
    folder = recipe_file.resolve().parent
    resolved = dict(values)
    for key in PATH_KEYS:
        value = values.get(key)
        if isinstance(value, str) and value.startswith(("./", "../")):
            resolved[key] = os.path.normpath(folder / value)
    return resolved


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys to values")
    return data


def load_recipe(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    recipe_class: type = TrainRecipe,
) -> Any:
    """Defaults < the recipe at `path` < `overrides` (e.g. from the command line)."""
    if path is not None:
        path = find_recipe(path)
        values = resolve_paths(read_yaml(path), path)
    else:
        values = {}
    source = str(path) if path is not None else "the command line"
    if overrides:
        values = {**values, **overrides}
        source = f"{source} (with command-line overrides)" if path is not None else source
    return build(recipe_class, values, source)


_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def _kind(annotation: Any) -> type | None:
    """bool or list for a field typed so (optional or not), else None."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for choice in typing.get_args(annotation) if union else (annotation,):
        if choice is bool:
            return bool
        if typing.get_origin(choice) in (list, tuple):
            return list
    return None


def add_recipe_arguments(parser: argparse.ArgumentParser, recipe_class: type) -> None:
    """One `--key-name VALUE` option per recipe field; given options override the recipe."""
    hints = typing.get_type_hints(recipe_class)
    for f in dataclasses.fields(recipe_class):
        flag = "--" + f.name.replace("_", "-")
        kind = _kind(hints[f.name])
        metavar = {bool: "true|false", list: "X[,X...]"}.get(kind, "VALUE")
        parser.add_argument(
            flag,
            dest=f"recipe__{f.name}",
            default=argparse.SUPPRESS,
            metavar=metavar,
            help=help_of(f),
        )


def _parse_override(text: str, kind: type | None) -> Any:
    """A command-line value: YAML scalars (1e-4, [1,2]), comma lists (1,2,3,5) for list
    keys, and true/false, yes/no, on/off, 1/0 for switches."""
    import yaml

    if kind is bool and text.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
        return text.strip().lower() in _TRUE_WORDS
    if kind is list and "," in text and not text.strip().startswith("["):
        return [_parse_override(part, None) for part in text.split(",") if part.strip()]
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def overrides_from_args(args: argparse.Namespace, recipe_class: type = TrainRecipe) -> dict:
    """The recipe keys given on the command line, parsed by `_parse_override`."""
    hints = typing.get_type_hints(recipe_class)
    return {
        name.removeprefix("recipe__"): _parse_override(
            text, _kind(hints.get(name.removeprefix("recipe__")))
        )
        for name, text in vars(args).items()
        if name.startswith("recipe__")
    }


# keys only a training recipe has: a recipe with one of them is a training recipe
_TRAINING_ONLY = ("calibration_dataset", "output_dir")


def eval_settings(path: str | Path, sweep: bool) -> dict[str, Any]:
    """`EvalConfig` keys from a recipe, for `bild-align eval --recipe`.

    An eval recipe holds EvalConfig keys (small, large, task, split, rb, fb, sweep, ...). A
    training recipe supplies its output_dir as the small model, its large_model, task and
    eval_split, rb / fb (sweep_rb / sweep_fb with `sweep`) and its prompt settings."""
    from bild_align.configs import EvalConfig

    path = find_recipe(path)
    values = resolve_paths(read_yaml(path), path)
    if not any(key in values for key in _TRAINING_ONLY):
        return check_values(EvalConfig, values, str(path))
    recipe = load_recipe(path)
    chosen = {
        "small": recipe.output_dir,
        "large": recipe.large_model,
        "task": recipe.task,
        "split": recipe.eval_split,
        "rb": tuple(recipe.sweep_rb if sweep else recipe.rb),
        "fb": tuple(recipe.sweep_fb if sweep else recipe.fb),
        "prompt_template": recipe.prompt_template,
        "chat_template": recipe.chat_template or None,  # decoder-only pairs' prompts
    }
    return {key: value for key, value in chosen.items() if value is not None}
