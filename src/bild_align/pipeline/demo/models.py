"""The offline demo pair: trained here, on real text, and shipped under data/demo/.

    python -m bild_align.pipeline.demo.models tokenizer   # SentencePiece vocabulary (train split)
    python -m bild_align.pipeline.demo.models models      # tokenizer, then both models
    python -m bild_align.pipeline.demo.models causal      # the decoder-only pair

`make demo-models` runs the second command; it rebuilds data/demo/{tokenizer,large,small}
from scratch (deterministic seeds) with the project's own `bild-align train` recipes
(recipes/demo-large.yaml, recipes/demo-small.yaml). `make demo-models-causal` runs the third:
two Llama models with the same vocabulary (recipes/demo-causal-{large,small}.yaml) into
data/demo-causal/{large,small}.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bild_align.reporting import report
from bild_align.resources import DEMO_CAUSAL_DIR, DEMO_DIR, RECIPES_DIR


def train_tokenizer(output: Path, vocab_size: int = 4000) -> Path:
    """A unigram SentencePiece vocabulary over both languages of the train split."""
    import sentencepiece
    from transformers import T5Tokenizer

    from bild_align.data.gettext_corpus import load_split

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
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from bild_align.models.loading import plain_generation_config

    encoder_decoder = AutoConfig.from_pretrained(run_dir).is_encoder_decoder
    kind = AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM
    model = kind.from_pretrained(run_dir).to(torch.float16)
    # only the special tokens: the Trainer saves every default (max_length=20, top_k=50, ...),
    # which would then override callers' settings
    model.generation_config = plain_generation_config(model)
    model.save_pretrained(output)
    AutoTokenizer.from_pretrained(run_dir).save_pretrained(output)
    return output


def build_models(causal: bool = False) -> None:
    """The T5 pair (a new tokenizer first), or the decoder-only pair on the T5 pair's one."""
    from bild_align.pipeline.train.command import run_training
    from bild_align.recipes import load_recipe

    start = time.time()
    if not causal:
        train_tokenizer(DEMO_DIR / "tokenizer")
    folder, kind = (DEMO_CAUSAL_DIR, "demo-causal") if causal else (DEMO_DIR, "demo")
    for name in ("large", "small"):
        recipe = load_recipe(RECIPES_DIR / f"{kind}-{name}.yaml")
        run_dir = run_training(
            recipe, resume=(Path(recipe.output_dir) / "bild_align_train.json").is_file()
        )
        export(run_dir, folder / name)
        report(
            f"{kind} {name} model exported to {folder / name} "
            f"({(time.time() - start) / 60:.1f} min so far)"
        )


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "tokenizer":
        report(train_tokenizer(DEMO_DIR / "tokenizer"))
    elif command in ("models", "causal"):
        build_models(causal=command == "causal")
    else:
        sys.exit("usage: python -m bild_align.pipeline.demo.models {tokenizer|models|causal}")
