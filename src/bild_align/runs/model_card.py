"""The model card of an aligned small model, and its upload with the model to the Hub.

    facts = card_facts("outputs/aligned")          # what the folder's records say
    text = render_card(facts, "me/t5-small-aligned")
    url = publish_model(api, "outputs/aligned", "me/t5-small-aligned")   # card + model files

The facts come from the folder alone: `bild_align_train.json` (what `bild-align train` ran:
its recipe, the small model's revision, steps, time, held-out measures before and after),
`bild_policy.json` (what `bild-align tune --save` chose and measured) and the fallback head.
So `bild-align push` after `tune --save` publishes a card that names the tuned setting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bild_align.runs.files import write_text_atomic
from bild_align.runs.hub import hub_url, upload

TRAIN_RECORD = "bild_align_train.json"
# what a training output_dir holds beside the model, kept off the Hub
NOT_PUBLISHED = [
    "checkpoint-*",
    "incomplete-checkpoints/*",
    "runs/*",
    "training_args.bin",
    TRAIN_RECORD,
    ".*",
]
MEASURES = {
    "eval_agreement_bleu": "agreement with the large model's outputs (BLEU)",
    "eval_agreement_exact": "outputs identical to the large model's (share)",
    "eval_expected_acceptance": "expected acceptance of drafted tokens",
    "eval_confidence_gap": "confidence gap",
    "eval_rollback_cross_entropy": "large model's cross-entropy of the small model's choices",
    "eval_loss": "held-out loss",
}


def card_facts(folder: str | Path) -> dict[str, Any]:
    from bild_align.models.fallback_heads import HEAD_FILE
    from bild_align.models.saved_policy import read_saved

    folder = Path(folder).expanduser()
    record_path = folder / TRAIN_RECORD
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    result = record.get("result", {})
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    return {
        "decoder_only": not config.get("is_encoder_decoder", False),
        "recipe": result.get("recipe") or record.get("fingerprint", {}),
        "result": {key: value for key, value in result.items() if key != "recipe"},
        "saved_policy": read_saved(folder),
        "fallback_head": (folder / HEAD_FILE).is_file(),
    }


def _hub_link(name: str | None, repo_type: str) -> str:
    """A Hub id as a link; a local path or a task as code."""
    if not name:
        return "not recorded"
    looks_like_id = name.count("/") == 1 and not Path(name).exists() and ":" not in name
    return f"[{name}]({hub_url(name, repo_type)})" if looks_like_id else f"`{name}`"


def _measures_table(before: dict, after: dict) -> list[str]:
    rows = [
        f"| {words} | {before[key]:.4g} | {after[key]:.4g} |"
        if key in before
        else f"| {words} | | {after[key]:.4g} |"
        for key, words in MEASURES.items()
        if key in after
    ]
    if not rows:
        return ["No held-out measures were recorded."]
    return ["| held-out measure | before | after |", "| --- | --- | --- |", *rows]


def _bild_section(saved: dict | None, head: bool) -> list[str]:
    if saved is None:
        return [
            "Not tuned yet: `bild-align tune --small THIS_FOLDER --large LARGE --task TASK "
            "--save` finds the fastest setting within a quality budget and records it here."
        ]
    policy, tuned = saved["policy"], saved.get("tuned", {})
    lines = [
        f"Tuned with `bild-align tune --save` against `{saved['pair']['large']}` "
        f"(revision {saved['pair'].get('large_revision')}): fallback rule "
        f"`{policy['fallback_rule']}`, fallback threshold {policy['fallback_threshold']:g}, "
        f"rollback threshold {policy['rollback_threshold']:g}, at most "
        f"{policy['max_small_steps']} drafted tokens per check.",
    ]
    if tuned:
        measured = tuned.get("measured_speedup")
        lines.append(
            f"On {tuned.get('task')} ({tuned.get('split')}, {tuned.get('examples')} examples, "
            f"{tuned.get('metric')}): quality {tuned.get('quality', 0):.2f}, change against the "
            f"large model {-tuned.get('drop', 0):+.2f}, modelled speedup "
            f"{tuned.get('speedup', 0):.2f}x"
            + (f", measured {measured:.2f}x" if measured else "")
            + " over the large model's `generate` at batch 1."
        )
    if tuned.get("command"):
        lines.append(f"Command: `{tuned['command']}`")
    if head:
        lines.append("The learned fallback head (`fallback_rule='learned'`) is included.")
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def render_card(facts: dict[str, Any], repo_id: str) -> str:
    """README.md for the aligned model: YAML metadata, then what it is and how it was made."""
    import yaml

    recipe, result = facts["recipe"], facts["result"]
    small, large = recipe.get("small_model"), recipe.get("large_model")
    calibration = recipe.get("calibration_dataset")
    header: dict[str, Any] = {
        "library_name": "transformers",
        "tags": ["bild-align", "big-little-decoder", "speculative-decoding", "distillation"],
    }
    if small and _hub_link(small, "model").startswith("["):
        header["base_model"] = small
    if calibration and _hub_link(calibration, "dataset").startswith("["):
        header["datasets"] = [calibration]
    header["bild_align"] = {
        "small_model": small,
        "small_model_revision": result.get("small_revision"),
        "large_model": large,
        "calibration_dataset": calibration,
        "objective": recipe.get("objective"),
        "steps": result.get("steps"),
        "train_seconds": result.get("train_seconds"),
    }
    seconds = result.get("train_seconds")
    training = [
        f"- base small model: {_hub_link(small, 'model') if small else 'trained from scratch'}"
        + (f" (revision {result['small_revision']})" if result.get("small_revision") else ""),
        f"- large model it drafts for: {_hub_link(large, 'model')}",
        f"- calibration data (the large model's outputs): {_hub_link(calibration, 'dataset')}",
        f"- objective: {recipe.get('objective', 'sequence')}, Adafactor at learning rate "
        f"{recipe.get('learning_rate')}, batch {recipe.get('per_device_train_batch_size')}",
        f"- {result.get('steps', '?')} steps"
        + (f" in {_duration(seconds)}" if seconds else "")
        + (f", finished {result['finished']}" if result.get("finished") else ""),
    ]
    recipe_yaml = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True).rstrip()
    auto = "AutoModelForCausalLM" if facts.get("decoder_only") else "AutoModelForSeq2SeqLM"
    usage = f"""```py
import bild_align
from transformers import {auto}, AutoTokenizer

small = {auto}.from_pretrained("{repo_id}")
large = {auto}.from_pretrained("{large or "LARGE"}")
tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
inputs = tokenizer(["..."], return_tensors="pt")
out = large.generate(**inputs, assistant_model=small, custom_generate=bild_align.generate_bild,
                     max_new_tokens=128)
```"""
    return "\n".join(
        [
            "---",
            yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(),
            "---",
            "",
            f"# {repo_id}: a small model aligned to {large or 'its large model'} for BiLD",
            "",
            "The small model of a Big Little Decoder pair (Kim et al., 2023): it drafts, the "
            "large model checks. It was fine-tuned on the large model's own outputs with "
            "`bild-align train` so that the large model accepts more of its drafts.",
            "",
            "## Training",
            *training,
            "",
            "## Alignment, on held-out calibration rows",
            *_measures_table(result.get("metrics_before", {}), result.get("metrics_after", {})),
            "",
            "## BiLD setting",
            *_bild_section(facts["saved_policy"], facts["fallback_head"]),
            "",
            "## Usage",
            "Needs `pip install bild-align`. Without thresholds, `generate` uses the tuned "
            "setting above (`bild_policy.json` in this repository) when there is one, else give "
            "`fallback_threshold` and `rollback_threshold`.",
            "",
            usage,
            "",
            "## Recipe",
            "```yaml",
            recipe_yaml,
            "```",
            "",
        ]
    )


def publish_model(api, folder: str | Path, repo_id: str) -> str:
    """Write the card into `folder`, then upload the model, tokenizer, generation config,
    fallback head, tuned policy and card (not the checkpoints); the repository's URL."""
    folder = Path(folder).expanduser()
    write_text_atomic(folder / "README.md", render_card(card_facts(folder), repo_id))
    return upload(
        api,
        folder,
        repo_id,
        repo_type="model",
        later=f"bild-align push {folder} --repo {repo_id}",
        ignore_patterns=NOT_PUBLISHED,
    )
