"""`bild-align demo`: the whole pipeline, offline, on the shipped demo pair and gettext-de-en.

    bild-align demo                          # calibrate -> train -> tune -> eval, one table
    bild-align demo --drafter-layers 2       # ... beside a 2-layer drafter of the large model
    bild-align demo --pair causal            # the same with the decoder-only (Llama) pair
    results = run_demo(DemoConfig(calibration_rows=200, max_steps=100))   # a short demo

The shipped pair itself is rebuilt by `make demo-models` (`bild_align.pipeline.demo.models`).
"""

from __future__ import annotations

import json
from pathlib import Path

from bild_align.configs import DemoConfig, check
from bild_align.pipeline.demo.report import summary_table
from bild_align.reporting import report
from bild_align.resources import RECIPES_DIR


def run_demo(config: DemoConfig) -> dict:
    """calibrate -> train -> tune -> eval on the shipped pair, and the same for a drafter made
    from the large model; returns every eval's results."""
    check(config)
    from bild_align.defaults import demo_model
    from bild_align.runs.files import check_writable_folder

    large, small = demo_model("large", config.pair), demo_model("small", config.pair)
    root = Path(config.root()).expanduser()
    check_writable_folder(root, "--output-dir")  # named as typed, before the stages name theirs
    aligned_dir = root / config.aligned_folder()
    recipe = _alignment_recipe(config, root, small, large, aligned_dir)  # a bad one fails now
    drafter_dir = root / config.drafter_folder()
    drafter_aligned = root / f"{config.aligned_folder()}-{config.drafter_folder()}"
    if config.drafter_layers:
        drafter_recipe = _alignment_recipe(config, root, str(drafter_dir), large, drafter_aligned)
    if config.overwrite:
        _remove_demo_outputs(root)
    stages = 5 if config.drafter_layers else 4
    _banner(f"1/{stages} calibrate: the large model translates the train split")
    _calibrate(config, root, large)
    _banner(f"2/{stages} train: align the small model on the large model's outputs")
    _align(recipe, aligned_dir)
    tuned = None
    if config.tune_samples != 0:
        _banner(f"3/{stages} tune: the fastest aligned setting within 1 BLEU, on the validation "
                "split")  # fmt: skip
        tuned = _tune(config, aligned_dir, large, root / "tune.json")
    _banner(f"4/{stages} eval: large, small, assisted generation, BiLD unaligned, aligned and "
            "tuned")  # fmt: skip
    results = _evaluate(config, root, small, large, aligned_dir, tuned)
    if config.drafter_layers:
        _banner(
            f"5/{stages} drafter: {config.drafter_layers} decoder layer(s) made from the large "
            "model (its encoder shared), aligned, tuned and evaluated alike"
        )
        _make_drafter(config, large, drafter_dir)
        _align(drafter_recipe, drafter_aligned)
        drafter_tuned = None
        if config.tune_samples != 0:
            drafter_tuned = _tune(
                config, drafter_aligned, large, root / f"tune-{config.drafter_folder()}.json"
            )
        results |= _evaluate_drafter(config, root, large, drafter_aligned, drafter_tuned)
    report(summary_table(results, config))
    return results


def _alignment_recipe(config: DemoConfig, root: Path, small: str, large: str, output: Path):
    from bild_align.recipes import load_recipe

    align_recipe = "demo-causal-align.yaml" if config.pair == "causal" else "demo-align.yaml"
    return load_recipe(
        RECIPES_DIR / align_recipe,
        {
            "small_model": small,
            "large_model": large,
            "calibration_dataset": str(root / "calibration"),
            "output_dir": str(output),
            **config.alignment(),
            **_short_run_keys(config),
            **(config.align_overrides or {}),
        },
    )


def _calibrate(config: DemoConfig, root: Path, large: str) -> None:
    from bild_align.defaults import DEMO_TASK
    from bild_align.errors import OtherRunError, UserError
    from bild_align.pipeline.calibrate.command import CalibrateConfig, run_calibration

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


def _align(recipe, aligned_dir: Path) -> None:
    from bild_align.errors import UserError
    from bild_align.pipeline.train.command import run_training

    trained_steps = _trained_steps(aligned_dir)
    if trained_steps is not None and trained_steps > recipe.max_steps:
        raise UserError(
            f"{aligned_dir} holds a model aligned for {trained_steps} steps, more than "
            f"--max-steps {recipe.max_steps}; pass --overwrite to start the demo afresh, or "
            "choose another --output-dir"
        )
    if trained_steps == recipe.max_steps:
        report(f"{aligned_dir} already holds the model aligned for {trained_steps} steps")
    else:  # new, interrupted, or asked for more steps: training continues where it stopped
        run_training(recipe, resume=True)


def _tune(config: DemoConfig, small: Path, large: str, output: Path) -> dict:
    from bild_align.defaults import DEMO_TASK
    from bild_align.pipeline.tune.command import TuneConfig, run_tune

    return run_tune(
        TuneConfig(
            small=str(small),
            large=large,
            task=DEMO_TASK,
            max_samples=config.tune_samples,
            max_new_tokens=config.max_new_tokens,
            output=str(output),
        )
    )["chosen"]


def _common_eval(config: DemoConfig, large: str) -> dict:
    from bild_align.defaults import DEMO_TASK

    return dict(
        large=large,
        task=DEMO_TASK,
        split="test",
        max_samples=config.eval_samples,
        max_new_tokens=config.max_new_tokens,
    )


def _evaluate(config, root: Path, small: str, large: str, aligned_dir: Path, tuned) -> dict:
    from bild_align.pipeline.eval.command import EvalConfig, run_eval

    common = _common_eval(config, large)
    unaligned = run_eval(
        EvalConfig(
            small=small,
            **_fixed_setting(config),
            output=str(root / "eval_unaligned.json"),
            **common,
        )
    )
    aligned = run_eval(
        EvalConfig(
            small=str(aligned_dir),
            rollback_threshold=tuple(
                sorted({config.rollback_threshold, *config.sweep_rollback_thresholds})
            ),
            fallback_threshold=tuple(
                sorted({config.fallback_threshold, *config.sweep_fallback_thresholds})
            ),
            sweep=True,
            baselines=("large", "small"),
            output=str(root / "eval_aligned.json"),
            **common,
        )
    )
    results = {"unaligned": unaligned, "aligned": aligned}
    if tuned is None:
        return results
    settings = {"fixed": _fixed_setting(config), "tuned": _eval_settings(tuned)}
    for batch_size in (1, 8):
        for name, setting in settings.items():
            if batch_size == 1 and name == "fixed":
                continue  # the aligned sweep above holds it
            results[f"{name}_batch{batch_size}"] = run_eval(
                EvalConfig(
                    small=str(aligned_dir),
                    **setting,
                    baselines=("large", "engine") if batch_size == 1 else ("large",),
                    batch_size=batch_size,
                    output=str(root / f"eval_{name}_batch{batch_size}.json"),
                    **common,
                )
            )
    return results


def _make_drafter(config: DemoConfig, large: str, drafter_dir: Path) -> None:
    from bild_align.models.drafters import read_record
    from bild_align.pipeline.drafter.command import DrafterConfig, run_drafter

    if read_record(drafter_dir) is not None:
        report(f"{drafter_dir} already holds the drafter")
        return
    made = run_drafter(
        DrafterConfig(large=large, output=str(drafter_dir), layers=config.drafter_layers)
    )
    report(f"drafter written to {drafter_dir}: {made['parameters']:,} parameters")


def _evaluate_drafter(config, root: Path, large: str, aligned: Path, tuned) -> dict:
    """The aligned drafter alone and with BiLD at its tuned setting (else the fixed one), at
    batch 1 and, when tuned, batch 8."""
    from bild_align.pipeline.eval.command import EvalConfig, run_eval

    setting = _eval_settings(tuned) if tuned else _fixed_setting(config)
    name = "drafter_tuned" if tuned else "drafter_fixed"
    results = {}
    for batch_size in (1, 8) if tuned else (1,):
        results[f"{name}_batch{batch_size}"] = run_eval(
            EvalConfig(
                small=str(aligned),
                **setting,
                baselines=("large", "engine", "small") if batch_size == 1 else ("large",),
                batch_size=batch_size,
                output=str(root / f"eval_{name}_batch{batch_size}.json"),
                **_common_eval(config, large),
            )
        )
    return results


def _eval_settings(chosen: dict) -> dict:
    """EvalConfig fields for a setting `tune` chose (as tune.json writes it)."""
    return {
        "rollback_threshold": (chosen["rb"],),
        "fallback_threshold": (chosen["fb"],),
        "max_small_steps": chosen["steps"],
        "fallback_rule": chosen["rule"],
    }


def _fixed_setting(config: DemoConfig) -> dict:
    """EvalConfig fields for the demo's fixed thresholds."""
    return {
        "rollback_threshold": (config.rollback_threshold,),
        "fallback_threshold": (config.fallback_threshold,),
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

    from bild_align.models.drafters import DRAFTER_FILE
    from bild_align.pipeline.calibrate.runs import RUN_FILE as CALIBRATION_RUN
    from bild_align.pipeline.train.runs import RUN_FILE as TRAINING_RUN
    from bild_align.runs.records import partial_path

    if (root / "calibration" / CALIBRATION_RUN).is_file():
        shutil.rmtree(root / "calibration")
    for folder in root.glob("aligned*"):
        if (folder / TRAINING_RUN).is_file():
            shutil.rmtree(folder)
    names = ["eval_unaligned", "eval_aligned"]
    kinds = ("fixed", "tuned", "drafter_fixed", "drafter_tuned")
    names += [f"eval_{name}_batch{size}" for name in kinds for size in (1, 8)]
    for name in names:
        results = root / f"{name}.json"
        for path in (results, partial_path(results), *map(results.with_suffix, (".csv", ".png"))):
            path.unlink(missing_ok=True)
    for tune in (root / "tune.json", *root.glob("tune-drafter-*.json")):
        for path in (tune, tune.with_suffix(".png"), partial_path(tune)):
            path.unlink(missing_ok=True)
    for folder in root.glob("drafter-*"):
        if (folder / DRAFTER_FILE).is_file():
            shutil.rmtree(folder)


def _trained_steps(aligned_dir: Path) -> int | None:
    """The steps the finished aligned model in `aligned_dir` was trained for, or None."""
    from bild_align.pipeline.train.runs import RUN_FILE

    if not (aligned_dir / "model.safetensors").exists():
        return None
    try:
        record = json.loads((aligned_dir / RUN_FILE).read_text(encoding="utf-8"))
        return int(record["result"]["recipe"]["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _banner(text: str) -> None:
    report(f"\n=== {text} ===")
