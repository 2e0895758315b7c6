"""`bild-align demo`: the whole pipeline, offline, on the shipped demo pair and gettext-de-en.

    bild-align demo                          # calibrate -> train -> tune -> eval, one table
    bild-align demo --pair causal            # the same with the decoder-only (Llama) pair
    results = run_demo(DemoConfig(calibration_rows=200, max_steps=100))   # a short demo

The shipped pair itself is rebuilt by `make demo-models` (`bild_align.stages.demo_models`).
"""

from __future__ import annotations

import json
from pathlib import Path

from bild_align.configs import DemoConfig, check
from bild_align.demo_report import summary_table
from bild_align.resources import RECIPES_DIR


def run_demo(config: DemoConfig) -> dict:
    """calibrate -> train -> eval on the shipped pair; returns both eval results."""
    check(config)
    from bild_align.defaults import DEMO_TASK, demo_model
    from bild_align.errors import OtherRunError, UserError
    from bild_align.io_utils import check_writable_folder
    from bild_align.recipes import load_recipe
    from bild_align.stages.calibrate import CalibrateConfig, run_calibration
    from bild_align.stages.evaluate import EvalConfig, run_eval
    from bild_align.stages.train import run_training
    from bild_align.stages.tune import TuneConfig, run_tune

    large, small = demo_model("large", config.pair), demo_model("small", config.pair)
    root = Path(config.root()).expanduser()
    check_writable_folder(root, "--output-dir")  # named as typed, before the stages name theirs
    aligned_dir = root / config.aligned_folder()
    align_recipe = "demo-causal-align.yaml" if config.pair == "causal" else "demo-align.yaml"
    recipe = load_recipe(  # before any work: a bad combination of options fails now
        RECIPES_DIR / align_recipe,
        {
            "small_model": small,
            "large_model": large,
            "calibration_dataset": str(root / "calibration"),
            "output_dir": str(aligned_dir),
            **config.alignment(),
            **_short_run_keys(config),
            **(config.align_overrides or {}),
        },
    )
    if config.overwrite:
        _remove_demo_outputs(root)
    _banner("1/4 calibrate: the large model translates the train split")
    try:
        run_calibration(
            CalibrateConfig(
                large=large,
                task=DEMO_TASK,
                split="train",
                output=str(root / "calibration"),
                max_samples=config.calibration_rows,
                batch_size=64,
                max_new_tokens=config.max_new_tokens,
            )
        )
    except OtherRunError as error:
        raise UserError(
            f"{root} holds a demo run with other settings (its calibration differs in: "
            f"{', '.join(error.changed)}); pass --overwrite to start afresh, or choose another "
            "--output-dir"
        ) from None
    _banner("2/4 train: align the small model on the large model's outputs")
    trained_steps = _trained_steps(aligned_dir)
    if trained_steps is not None and trained_steps > recipe.max_steps:
        raise UserError(
            f"{aligned_dir} holds a model aligned for {trained_steps} steps, more than "
            f"--max-steps {recipe.max_steps}; pass --overwrite to start the demo afresh, or "
            "choose another --output-dir"
        )
    if trained_steps == recipe.max_steps:
        print(f"{aligned_dir} already holds the model aligned for {trained_steps} steps")
    else:  # new, interrupted, or asked for more steps: training continues where it stopped
        run_training(recipe, resume=True)
    tuned = None
    if config.tune_samples != 0:
        _banner("3/4 tune: the fastest aligned setting within 1 BLEU, on the validation split")
        tuned = run_tune(
            TuneConfig(
                small=str(aligned_dir),
                large=large,
                task=DEMO_TASK,
                max_samples=config.tune_samples,
                max_new_tokens=config.max_new_tokens,
                output=str(root / "tune.json"),
            )
        )["chosen"]
    _banner("4/4 eval: large, small, assisted generation, BiLD unaligned, aligned and tuned")
    common = dict(
        large=large,
        task=DEMO_TASK,
        split="test",
        max_samples=config.eval_samples,
        max_new_tokens=config.max_new_tokens,
    )
    unaligned = run_eval(
        EvalConfig(
            small=small,
            rb=(config.rb,),
            fb=(config.fb,),
            output=str(root / "eval_unaligned.json"),
            **common,
        )
    )
    aligned = run_eval(
        EvalConfig(
            small=str(aligned_dir),
            rb=tuple(sorted({config.rb, *config.sweep_rb})),
            fb=tuple(sorted({config.fb, *config.sweep_fb})),
            sweep=True,
            baselines=("large", "small"),
            output=str(root / "eval_aligned.json"),
            **common,
        )
    )
    results = {"unaligned": unaligned, "aligned": aligned}
    if tuned is not None:
        settings = {
            "fixed": {"rb": (config.rb,), "fb": (config.fb,)},
            "tuned": _eval_settings(tuned),
        }
        for batch_size in (1, 8):
            for name, setting in settings.items():
                if batch_size == 1 and name == "fixed":
                    continue  # the aligned sweep above holds it
                results[f"{name}_batch{batch_size}"] = run_eval(
                    EvalConfig(
                        small=str(aligned_dir),
                        **setting,
                        baselines=("large",),
                        batch_size=batch_size,
                        output=str(root / f"eval_{name}_batch{batch_size}.json"),
                        **common,
                    )
                )
    print(summary_table(results, config))
    return results


def _eval_settings(chosen: dict) -> dict:
    """EvalConfig fields for a setting `tune` chose."""
    return {
        "rb": (chosen["rb"],),
        "fb": (chosen["fb"],),
        "max_small_steps": chosen["steps"],
        "fallback": chosen["rule"],
    }


def _short_run_keys(config: DemoConfig) -> dict:
    """Recipe keys that fit the alignment step to --calibration-rows and --max-steps."""
    keys = {}
    if config.calibration_rows is not None:
        keys["eval_rows"] = min(200, config.calibration_rows // 5)
    if config.max_steps is not None:
        every = min(1000, config.max_steps)
        keys.update(max_steps=config.max_steps, eval_steps=every, save_steps=every)
    return keys


def _remove_demo_outputs(root: Path) -> None:
    """--overwrite: delete what a demo wrote into `root` (its calibration run, aligned models
    and eval results), and nothing else."""
    import shutil

    from bild_align.calibration_runs import RUN_FILE as CALIBRATION_RUN
    from bild_align.runs import partial_path
    from bild_align.training_runs import RUN_FILE as TRAINING_RUN

    if (root / "calibration" / CALIBRATION_RUN).is_file():
        shutil.rmtree(root / "calibration")
    for folder in root.glob("aligned*"):
        if (folder / TRAINING_RUN).is_file():
            shutil.rmtree(folder)
    names = ["eval_unaligned", "eval_aligned"]
    names += [f"eval_{name}_batch{size}" for name in ("fixed", "tuned") for size in (1, 8)]
    for name in names:
        results = root / f"{name}.json"
        for path in (results, partial_path(results), *map(results.with_suffix, (".csv", ".png"))):
            path.unlink(missing_ok=True)
    for path in (root / "tune.json", root / "tune.png", partial_path(root / "tune.json")):
        path.unlink(missing_ok=True)


def _trained_steps(aligned_dir: Path) -> int | None:
    """The steps the finished aligned model in `aligned_dir` was trained for, or None."""
    from bild_align.training_runs import RUN_FILE

    if not (aligned_dir / "model.safetensors").exists():
        return None
    try:
        record = json.loads((aligned_dir / RUN_FILE).read_text(encoding="utf-8"))
        return int(record["result"]["recipe"]["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)
