"""`bild-align drafter`: a small model made from the large one, ready to align and to pair.

    bild-align drafter --large data/demo/large --layers 2 --output drafters/demo-2
    bild-align drafter --large google/mt5-large --layers 1 --output drafters/mt5-1 \
        --vocab-size 16000 --calibration-dataset calibration/iwslt2017-de-en
    bild-align train --recipe recipes/demo.yaml --small-model drafters/demo-2 ...
    result = run_drafter(DrafterConfig(large="L", output="D", layers=2))

Encoder-decoder (T5/mT5, the BART family): the large model's encoder, embeddings, output
layer and LAYERS of its decoder layers; decoder-only (the Llama family): LAYERS of its layers
with its embeddings, final norm and output layer. The folder is an ordinary model folder (the
Auto classes load it) with the tokenizer, the generation config and `bild_drafter.json`.
With --vocab-size the record keeps the ids of the K tokens the calibration targets use most:
the folder's output layer stays whole, and bild-align's decoders score those K only.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bild_align.configs import DrafterConfig, check
from bild_align.core.engines.output_layer import output_size
from bild_align.errors import UserError
from bild_align.models.drafters import (
    build_drafter,
    decoder_depth,
    most_used_tokens,
    save_drafter,
    special_ids,
)
from bild_align.models.loading import load_seq2seq_or_causal
from bild_align.runs.files import check_writable_folder


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file; give a new or empty folder")
    check_writable_folder(output)
    if output.is_dir() and any(output.iterdir()):
        raise UserError(f"--output {output} holds files; give a new or empty folder")


def _calibration_targets(name: str) -> list[str]:
    from bild_align.data.calibration import load_calibration

    return [text for text in load_calibration(name, "train")["target"] if text]


def _kept_vocab(config: DrafterConfig, targets: list[str], large, tokenizer) -> dict:
    vocab = output_size(large)  # the ids the large model scores
    if config.vocab_size >= vocab:
        raise UserError(
            f"--vocab-size {config.vocab_size}: the vocabulary has {vocab} tokens; give fewer"
        )
    always = special_ids(large, tokenizer)
    if config.vocab_size <= len(always):
        raise UserError(
            f"--vocab-size {config.vocab_size}: the {len(always)} special tokens alone fill "
            "it; give more"
        )
    tokenized = tokenizer(targets, add_special_tokens=True)["input_ids"]
    kept = most_used_tokens(tokenized, config.vocab_size, always)
    return {"ids": kept, "calibration": config.calibration_dataset}


def run_drafter(config: DrafterConfig) -> dict:
    check(config)
    output = Path(config.output).expanduser()
    _check_output(output)
    targets = None
    if config.vocab_size is not None:  # a wrong dataset is refused before the model loads
        targets = _calibration_targets(config.calibration_dataset)
        if not targets:
            raise UserError(f"{config.calibration_dataset} holds no train targets to count")
    large, tokenizer, revision = load_seq2seq_or_causal(
        config.large, dtype=config.dtype, device="cpu"
    )
    drafter, layers = build_drafter(  # refuses an architecture or a layer count, writing nothing
        large, config.layers, config.init
    )
    vocab = None if targets is None else _kept_vocab(config, targets, large, tokenizer)
    made_from = {"large": config.large, "large_revision": revision}
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:  # written whole, then moved into place: an interruption leaves no half folder
        record = save_drafter(drafter, tokenizer, staging, made_from=made_from, layers=layers,
                              init=config.init, vocab=vocab)  # fmt: skip
        if output.is_dir():
            output.rmdir()
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    def count(model):
        return sum(parameter.numel() for parameter in model.parameters())

    return {
        **{key: value for key, value in record.items() if key != "vocab"},
        "kept_tokens": None if vocab is None else len(vocab["ids"]),
        "output": str(output),
        "decoder_layers": f"{len(layers)} of {decoder_depth(large)}",
        "parameters": count(drafter),
        "large_parameters": count(large),
    }
