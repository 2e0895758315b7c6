"""The offline demo pair: trained here, on real text, and shipped under data/demo/.

    python -m bild_align.stages.demo tokenizer   # SentencePiece vocabulary, gettext-de-en train
    python -m bild_align.stages.demo models      # tokenizer, then train and export both models

`make demo-models` runs the second command; it rebuilds data/demo/{tokenizer,large,small}
from scratch (deterministic seeds) with the project's own `bild-align train` recipes
(recipes/demo-large.yaml, recipes/demo-small.yaml).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bild_align.configs import DemoConfig
from bild_align.resources import DEMO_DIR, RECIPES_DIR


def train_tokenizer(output: Path, vocab_size: int = 4000) -> Path:
    """A unigram SentencePiece vocabulary over both languages of the train split."""
    import sentencepiece
    from transformers import T5Tokenizer

    from bild_align.gettext_corpus import load_split

    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        text = Path(scratch, "text.txt")
        text.write_text(
            "".join(f"{row['de']}\n{row['en']}\n" for row in load_split("train")), encoding="utf-8"
        )
        sentencepiece.SentencePieceTrainer.train(
            input=str(text),
            model_prefix=str(Path(scratch, "spiece")),
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=1.0,
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            num_threads=1,
            minloglevel=2,
        )
        tokenizer = T5Tokenizer.from_pretrained(scratch, extra_ids=0)
    tokenizer.save_pretrained(output)
    return output


def export(run_dir: Path, output: Path) -> Path:
    """Save the trained model in float16 safetensors (small enough to ship) with its tokenizer."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from bild_align.models import plain_generation_config

    model = AutoModelForSeq2SeqLM.from_pretrained(run_dir).to(torch.float16)
    # only the special tokens: the Trainer saves every default (max_length=20, top_k=50, ...),
    # which would then override callers' settings
    model.generation_config = plain_generation_config(model)
    model.save_pretrained(output)
    AutoTokenizer.from_pretrained(run_dir).save_pretrained(output)
    return output


def build_models() -> None:
    from bild_align.recipes import load_recipe
    from bild_align.stages.train import run_training

    start = time.time()
    train_tokenizer(DEMO_DIR / "tokenizer")
    for name in ("large", "small"):
        recipe = load_recipe(RECIPES_DIR / f"demo-{name}.yaml")
        run_dir = run_training(recipe)
        export(run_dir, DEMO_DIR / name)
        print(
            f"demo {name} model exported to {DEMO_DIR / name} "
            f"({(time.time() - start) / 60:.1f} min so far)"
        )


def run_demo(config: DemoConfig) -> dict:
    """calibrate -> train -> eval on the shipped pair; returns both eval results."""
    config.validate()
    from bild_align.defaults import DEMO_TASK, demo_model
    from bild_align.errors import OtherRunError, UserError
    from bild_align.recipes import load_recipe
    from bild_align.stages.calibrate import CalibrateConfig, run_calibration
    from bild_align.stages.evaluate import EvalConfig, run_eval
    from bild_align.stages.train import run_training

    large, small = demo_model("large"), demo_model("small")
    root = Path(config.output_dir).expanduser()
    aligned_dir = root / config.aligned_folder()
    recipe = load_recipe(  # before any work: a bad combination of options fails now
        RECIPES_DIR / "demo-align.yaml",
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
    _banner("1/3 calibrate: the large model translates the train split")
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
    _banner("2/3 train: align the small model on the large model's outputs")
    if (aligned_dir / "model.safetensors").exists():
        print(
            f"{aligned_dir} already holds the aligned model; pass --overwrite to start the "
            "demo afresh"
        )
    else:
        run_training(recipe, resume=True)  # continues an interrupted demo
    _banner("3/3 eval: large, small, assisted generation, BiLD unaligned and aligned, sweep")
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
    print(summary_table(unaligned, aligned, config))
    return {"unaligned": unaligned, "aligned": aligned}


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

    from bild_align.stages.calibrate import RUN_FILE as CALIBRATION_RUN
    from bild_align.stages.evaluate import partial_path
    from bild_align.stages.train import RUN_FILE as TRAINING_RUN

    if (root / "calibration" / CALIBRATION_RUN).is_file():
        shutil.rmtree(root / "calibration")
    for folder in root.glob("aligned*"):
        if (folder / TRAINING_RUN).is_file():
            shutil.rmtree(folder)
    for name in ("eval_unaligned", "eval_aligned"):
        results = root / f"{name}.json"
        for path in (results, partial_path(results), *map(results.with_suffix, (".csv", ".png"))):
            path.unlink(missing_ok=True)


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def summary_table(unaligned: dict, aligned: dict, config: DemoConfig) -> str:
    """One table: quality, latency, speedup and large-model calls per token of every run."""

    def find(results, method, setting=None):
        for row in results["methods"]:
            if row["method"] == method and (setting is None or row["setting"] == setting):
                return row
        return None

    chosen = {"rb": config.rb, "fb": config.fb}
    best = aligned["sweep"]["best"]
    rows = [
        ("large model alone", find(unaligned, "large")),
        ("small model alone (unaligned)", find(unaligned, "small")),
        ("small model alone (aligned)", find(aligned, "small")),
        ("assisted generation (transformers)", find(unaligned, "assisted")),
        (f"BiLD unaligned rb={config.rb:g} fb={config.fb:g}", find(unaligned, "bild", chosen)),
        (f"BiLD aligned rb={config.rb:g} fb={config.fb:g}", find(aligned, "bild", chosen)),
    ]
    if best is not None:
        setting = {"rb": best["rb"], "fb": best["fb"]}
        rows.append(
            (
                f"BiLD aligned, best sweep rb={best['rb']:g} fb={best['fb']:g}",
                find(aligned, "bild", setting),
            )
        )
    metric = unaligned["config"]["metric"].upper()
    lines = [
        f"\ngettext-de-en test split, {len(unaligned['config']['sample_ids'])} sentences, batch 1,"
        f" {unaligned['environment']['device']} ({unaligned['environment']['cpu_threads']} "
        "threads)",
        f"{'run':<44}{metric:>7}{'median ms':>11}{'speedup':>9}{'L calls/tok':>13}",
    ]
    for label, row in rows:
        if row is None:
            continue
        stats = row.get("stats")
        calls = f"{stats['large_calls_per_token']:.3f}" if stats else ""
        lines.append(
            f"{label:<44}{row['quality']['score']:>7.2f}"
            f"{row['latency']['median_s'] * 1000:>11.1f}{row['speedup']:>8.2f}x"
            f"{calls:>13}"
        )
    lines.append(f"BLEU: {unaligned['methods'][0]['quality']['signature']}")
    lines.append(f"sweep plot: {aligned['sweep']['plot']}  (CSV: {aligned['sweep']['csv']})")
    return "\n".join(lines)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "tokenizer":
        print(train_tokenizer(DEMO_DIR / "tokenizer"))
    elif command == "models":
        build_models()
    else:
        sys.exit("usage: python -m bild_align.stages.demo {tokenizer|models}")
