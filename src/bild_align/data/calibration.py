"""The calibration rows a training run learns from, as model inputs.

    dataset = load_calibration("calibration/iwslt2017-de-en", "train")  # or a Hub id, task:NAME
    split = split_calibration(recipe)            # "train" and "test" (eval_rows held out)
    split = with_prompts(split, recipe, model, tokenizer)   # decoder-only: a prompt column
    train_set, eval_set = tokenized(split, tokenizer, recipe, decoder_only)

Encoder-decoder rows: the source as input, the large model's output as labels. Decoder-only
rows: prompt + output, the prompt masked out of the labels (`prompts.completion_features`).
"""

from __future__ import annotations

import copy
from pathlib import Path

from bild_align.configs import TrainRecipe
from bild_align.data.tasks import get_task, load_rows
from bild_align.errors import UserError, first_line
from bild_align.models.loading import local_path_or_hub_id


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


def split_calibration(recipe: TrainRecipe):
    """The calibration rows as a DatasetDict: "train", and "test" (eval_rows held out)."""
    dataset = load_calibration(recipe.calibration_dataset, recipe.calibration_split)
    if len(dataset) <= recipe.eval_rows:
        raise UserError(
            f"the calibration data has {len(dataset)} rows, not more than eval_rows="
            f"{recipe.eval_rows}; lower eval_rows or calibrate more rows"
        )
    return dataset.train_test_split(test_size=recipe.eval_rows, seed=recipe.seed, shuffle=True)


def with_prompts(split, recipe: TrainRecipe, model, tokenizer):
    """Decoder-only: a `prompt` column (calibrate writes one; else the recipe's or the task's
    template around each source)."""
    from bild_align.data.prompts import Prompter

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


def right_padding(tokenizer):
    """The tokenizer for training batches: padded on the right, so that a decoder-only
    model's positions count from its first token (the saved tokenizer is left as it was)."""
    padded = copy.copy(tokenizer)
    padded.padding_side = "right"
    return padded


def tokenized(split, tokenizer, recipe: TrainRecipe, decoder_only: bool = False) -> list:
    """The training and held-out rows as model inputs, with the large model's outputs as labels
    (decoder-only: prompt + output, the loss on the output only)."""
    from bild_align.data.prompts import completion_features

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
