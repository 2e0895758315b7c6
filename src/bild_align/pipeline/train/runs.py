"""A training run's identity, checkpoints and record in its output_dir.

    check_output_dir(recipe, resume=False)    # refuse another run's or the user's folder
    record_run(recipe)                        # bild_align_train.json: the run's fingerprint
    checkpoints = complete_checkpoints(recipe.output_dir)   # whole ones, oldest first
    checkpoint, skipped, aside = resume_point(recipe.output_dir)   # partial ones moved aside
    record_result(recipe, trainer, metrics, seconds, resumed)   # what the model card tells

`bild_align_train.json` holds the fingerprint (the recipe without the keys a resumed run may
change, local paths made absolute) and, once training ends, the result: the small model's
revision, steps, time and the held-out measures before and after.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from bild_align.configs import TrainRecipe
from bild_align.errors import UserError
from bild_align.models.loading import local_path_or_hub_id
from bild_align.recipes import PATH_KEYS
from bild_align.runs.files import (
    check_writable_folder,
    read_json_file,
    write_json_atomic,
)
from bild_align.runs.model_card import TRAIN_RECORD
from bild_align.runs.records import recorded_differences

RUN_FILE = TRAIN_RECORD
# Keys a resumed run may change: how long and how often, and what `eval --recipe` reads (the
# eval section; its keys stood at the top level in earlier records).
RESUMABLE_CHANGES = frozenset(
    {"max_steps", "eval_steps", "save_steps", "save_total_limit", "logging_steps", "report_to",
     "run_name", "per_device_eval_batch_size", "large_model", "eval", "save_dtype",
     "output_dir", "measure_topk", "eval_split", "rb", "fb", "sweep_rb", "sweep_fb"}
)  # fmt: skip


def run_fingerprint(recipe: TrainRecipe) -> dict:
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
    if run_file.is_file():
        changed = recorded_differences(
            run_file,
            run_fingerprint(recipe),
            "delete it if this folder holds your training run, or choose another output_dir",
        )
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
        write_json_atomic(
            run_file, {"fingerprint": json.loads(json.dumps(run_fingerprint(recipe)))}
        )


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


def resume_point(output_dir: str) -> tuple[str | None, list[str], Path]:
    """The newest complete checkpoint (None: none yet), the incomplete ones' names, and the
    folder they were moved to: moved aside, not deleted, because the Trainer would count them
    as this run's newest checkpoints and rotate the good ones away."""
    checkpoints = complete_checkpoints(output_dir)
    aside = Path(output_dir) / "incomplete-checkpoints"
    partial = sorted(
        folder.name for folder in Path(output_dir).glob("checkpoint-*") if folder not in checkpoints
    )
    if partial:
        aside.mkdir(exist_ok=True)
        for name in partial:
            Path(output_dir, name).rename(aside / f"{name}-{time.time_ns()}")
    return (str(checkpoints[-1]) if checkpoints else None), partial, aside


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


def record_result(recipe: TrainRecipe, trainer, final_metrics: dict, seconds: float, resumed):
    """What the model card tells: the small model's revision, steps, time, and the held-out
    measures before training (the evaluation at step 0) and at the end."""
    from datetime import datetime, timezone

    run_file = Path(recipe.output_dir).expanduser() / RUN_FILE
    record = read_json_file(run_file, "delete it and train again")
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    before = next((entry for entry in evaluations if entry.get("step") == 0), {})
    record["result"] = {
        "recipe": json.loads(json.dumps(asdict(recipe))),
        "small_revision": small_revision(recipe),
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


def small_revision(recipe: TrainRecipe) -> str | None:
    if recipe.small_model is None:
        return None
    from transformers import AutoConfig

    from bild_align.models.loading import hub_options, local_fingerprint

    name = local_path_or_hub_id(recipe.small_model)
    if Path(name).is_dir():
        return f"local:{local_fingerprint(name)}"
    return getattr(AutoConfig.from_pretrained(name, **hub_options(name)), "_commit_hash", None)
