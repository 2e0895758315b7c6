"""Loading models and tokenizers by Hub id or local directory, with errors a user can act on.

model, tokenizer, revision = load_seq2seq("kssteven/mT5-large-iwslt2017-de-en",
                                         dtype="bfloat16", device="cuda")
"""

from __future__ import annotations

from pathlib import Path

import torch

from bild_align.errors import UserError


class ModelLoadError(UserError):
    """The model or tokenizer cannot be loaded; the message says what to do."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {name!r} requested but no CUDA device is available")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ModelLoadError(f"unknown dtype {name!r}; use one of {sorted(dtypes)}")
    return dtypes[name]


def looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") > 1


def model_revision(model, name: str) -> str:
    """The Hub commit the weights came from, or "local" for a directory."""
    if Path(name).exists():
        return "local"
    return getattr(model.config, "_commit_hash", None) or "unknown"


def load_seq2seq(name: str, *, dtype: str = "float32", device: str | torch.device = "auto"):
    """(model in eval mode on `device`, its tokenizer, its revision) for a seq2seq checkpoint."""
    from transformers import AutoModelForSeq2SeqLM

    return _load(AutoModelForSeq2SeqLM, "sequence-to-sequence", name, dtype, device)


def load_seq2seq_or_causal(name: str, *, dtype: str = "float32", device="auto"):
    """Like `load_seq2seq`, for an encoder-decoder or a decoder-only checkpoint."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    try:
        is_encoder_decoder = AutoConfig.from_pretrained(name).is_encoder_decoder
    except (OSError, ValueError):
        is_encoder_decoder = True  # let _load report the problem
    if is_encoder_decoder:
        return _load(AutoModelForSeq2SeqLM, "sequence-to-sequence", name, dtype, device)
    return _load(AutoModelForCausalLM, "causal language", name, dtype, device)


def _load(auto_class, kind: str, name: str, dtype: str, device):
    from transformers import AutoTokenizer

    if looks_local(name) and not Path(name).expanduser().exists():
        raise ModelLoadError(f"model directory {name} does not exist")
    torch_dtype = resolve_dtype(dtype)
    target = device if isinstance(device, torch.device) else resolve_device(device)
    try:
        model = auto_class.from_pretrained(name, dtype=torch_dtype)
    except (OSError, ValueError) as error:
        where = "directory" if Path(name).exists() else "Hub id (no network, or unknown id?)"
        raise ModelLoadError(
            f"could not load a {kind} model from {name} ({where}): {str(error).splitlines()[0]}"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"could not load the tokenizer of {name}: {str(error).splitlines()[0]}. Save it "
            "beside the model with tokenizer.save_pretrained(...)"
        ) from None
    return model.to(target).eval(), tokenizer, model_revision(model, name)
