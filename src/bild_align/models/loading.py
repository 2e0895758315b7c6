"""Loading models and tokenizers by Hub id or local directory, with errors a user can act on.

model, tokenizer, revision = load_seq2seq("kssteven/mT5-large-iwslt2017-de-en",
                                         dtype="bfloat16", device="cuda")
recorded = use_plain_generation(model)   # generate() then applies no logits processors

Checks made before any weights are read: the device exists, the dtype suits the architecture
(T5-family activations overflow float16), and a name that looks like a local path but does not
exist is reported as such (not as a Hub repository problem after network retries), and
without a network a Hub id is read from the local cache only (`hub_options`). After
loading, the tokenizer must actually know words: transformers builds an empty tokenizer for a
model directory whose tokenizer files are missing, which would silently produce empty outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bild_align.errors import UserError, first_line
from bild_align.models.drafters import prepare_drafter
from bild_align.runs.hub import hub_reachable

logger = logging.getLogger(__name__)  # notes; the command line shows them on stderr

# Architectures whose activations exceed float16's range (T5 v1.0/1.1, mT5 and their kin).
FLOAT16_UNSAFE = frozenset({"t5", "mt5", "umt5", "longt5", "switch_transformers"})
# Special-token settings every decoder here honours; anything else in a checkpoint's
# generation config (no_repeat_ngram_size, repetition_penalty, min_length, ...) is not applied.
KEPT_GENERATION_KEYS = frozenset(
    {
        "decoder_start_token_id",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "forced_bos_token_id",
    }
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


class ModelLoadError(UserError):
    """The model or tokenizer cannot be loaded; the message says what to do."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ModelLoadError(
            f"unknown device {name!r}; use auto, cpu, cuda or cuda:N (e.g. cuda:0)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {name!r} requested but no CUDA device is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ModelLoadError(
            f"device {name!r}: there are only {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


def resolve_dtype(name: str) -> torch.dtype:
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ModelLoadError(f"unknown dtype {name!r}; use one of {sorted(dtypes)}")
    return dtypes[name]


def check_dtype(model_type: str, dtype: str, where: str = "--dtype") -> None:
    """Refuse float16 for architectures known to overflow in it."""
    if dtype == "float16" and model_type in FLOAT16_UNSAFE:
        raise ModelLoadError(
            f"{where} float16: {model_type} models overflow in float16 (their activations "
            "exceed its range and the outputs become garbage); use bfloat16 or float32"
        )


def looks_local(name: str) -> bool:
    return (
        name.startswith((".", "/", "~"))
        or Path(name).expanduser().exists()
        or not _HUB_ID.match(name)
    )


def local_path_or_hub_id(name: str, what: str = "model") -> str:
    """`name` with `~` expanded when it is a local path; a UserError when it looks like a local
    path that does not exist (a typo), with the closest names in its folder."""
    expanded = os.path.expanduser(name)
    if Path(expanded).exists():
        return expanded
    parent = Path(expanded).parent
    typo_in_existing_folder = str(parent) not in ("", ".") and parent.is_dir()
    if looks_local(name) or typo_in_existing_folder:
        message = f"{what} directory {name} does not exist"
        if parent.is_dir():
            siblings = [entry.name for entry in parent.iterdir() if entry.is_dir()]
            close = difflib.get_close_matches(Path(expanded).name, siblings, n=3)
            if close:
                message += "; did you mean " + " or ".join(str(parent / c) for c in close) + "?"
        raise ModelLoadError(message)
    return name


def hub_options(name: str) -> dict:
    """Extra `from_pretrained` arguments for `name`: `local_files_only=True` when it is a Hub id
    and the Hub's host cannot even be resolved (no network), so that loading reads the local
    cache at once, or fails at once, instead of after half a minute of retries."""
    if Path(name).exists() or hub_reachable():
        return {}
    return {"local_files_only": True}


# what a model folder's revision digests: its weights, configuration and tokenizer; files
# users or tools put beside them (results, notes, bild-align's own records) leave it unchanged
_MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".model", ".index.json")
_MODEL_NAMES = frozenset(
    {"config.json", "generation_config.json", "special_tokens_map.json", "added_tokens.json",
     "merges.txt", "vocab.json", "vocab.txt", "chat_template.jinja"}
)  # fmt: skip
_NOT_THE_MODEL = frozenset({"bild_fallback_head.safetensors"})


def _is_model_file(path: Path) -> bool:
    name = path.name
    if name.startswith(".") or name in _NOT_THE_MODEL or not path.is_file():
        return False
    return name in _MODEL_NAMES or name.startswith("tokenizer") or name.endswith(_MODEL_SUFFIXES)


def local_fingerprint(folder: str | os.PathLike) -> str:
    """A digest of a model folder's model files, by name and content: a copy of the folder
    (`cp -r`, a download elsewhere) has the same one; another save into it, e.g. `train
    --resume` into the same output_dir, changes it; a results file or a fallback head written
    beside the model does not."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(filter(_is_model_file, Path(folder).iterdir())):
        digest.update(f"{path.name}\0{_content_digest(path)}\0".encode())
    return digest.hexdigest()[:16]


# content digests by (path, size, modification time): a process reads each file once
_DIGESTS: dict[tuple[str, int, int], str] = {}


def _content_digest(path: Path) -> str:
    import hashlib

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def model_revision(model, name: str) -> str:
    """The Hub commit the weights came from, or "local:" and a digest of a folder's files."""
    if Path(name).exists():
        return f"local:{local_fingerprint(name)}"
    return getattr(model.config, "_commit_hash", None) or "unknown"


def load_seq2seq(name: str, *, dtype: str = "float32", device: str | torch.device = "auto"):
    """(model in eval mode on `device`, its tokenizer, its revision) for a seq2seq checkpoint."""
    from transformers import AutoModelForSeq2SeqLM

    return _load(AutoModelForSeq2SeqLM, "sequence-to-sequence", name, dtype, device)


def load_seq2seq_or_causal(name: str, *, dtype: str = "float32", device="auto"):
    """Like `load_seq2seq`, for an encoder-decoder or a decoder-only checkpoint."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    name = local_path_or_hub_id(name)
    config = _load_config(name, "model")
    if getattr(config, "is_encoder_decoder", False):
        return _load(AutoModelForSeq2SeqLM, "sequence-to-sequence", name, dtype, device, config)
    return _load(AutoModelForCausalLM, "causal language", name, dtype, device, config)


def _load_config(name: str, kind: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, **hub_options(name))
    except (OSError, ValueError) as error:
        raise _cannot_load(kind, name, error) from None


def _cannot_load(kind: str, name: str, error: BaseException) -> ModelLoadError:
    if Path(name).exists():
        where = "directory"
    elif hub_options(name):
        where = "Hub id; the Hub cannot be reached from here and nothing is cached for it"
    else:
        where = "Hub id (no network, or unknown id?)"
    return ModelLoadError(f"could not load a {kind} from {name} ({where}): {first_line(error)}")


def _load(auto_class, kind: str, name: str, dtype: str, device, config=None):
    """`config`: the checkpoint's, when the caller has read it already."""
    from transformers import AutoTokenizer

    target = device if isinstance(device, torch.device) else resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    if config is None:
        name = local_path_or_hub_id(name)
        config = _load_config(name, f"{kind} model")
    check_dtype(config.model_type, dtype)
    try:
        model = auto_class.from_pretrained(name, dtype=torch_dtype, **hub_options(name))
    except (OSError, ValueError) as error:
        raise _cannot_load(f"{kind} model", name, error) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **hub_options(name))
    except (OSError, ValueError, TypeError) as error:
        raise ModelLoadError(
            f"could not load the tokenizer of {name}: {first_line(error)}. Save it "
            "beside the model with tokenizer.save_pretrained(...)"
        ) from None
    check_tokenizer(tokenizer, model, name)
    return model.to(target).eval(), tokenizer, model_revision(model, name)


def check_tokenizer(tokenizer, model, name: str) -> None:
    """Refuse a tokenizer that knows no words or more ids than the model has embeddings."""
    sample = "Hello world, this is a test. Hallo Welt, das ist ein Test."
    ids = tokenizer(sample, add_special_tokens=False).input_ids
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    letters = sum(character.isalpha() for character in sample)
    if sum(character.isalpha() for character in decoded) < letters / 2:  # mostly unknown
        raise ModelLoadError(
            f"the tokenizer of {name} knows no words (its vocabulary files, e.g. "
            "tokenizer.json or spiece.model, are missing, so every output would be empty); "
            "save the tokenizer beside the model with tokenizer.save_pretrained(...)"
        )
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ModelLoadError(
            f"the tokenizer of {name} has {len(tokenizer)} tokens but the model only {rows} "
            "embeddings: they do not belong together"
        )


def plain_generation_config(model):
    """Greedy decoding with the checkpoint's special tokens and no logits processors: the
    settings every method of a comparison shares (our decoders apply no processors)."""
    from transformers import GenerationConfig

    source = model.generation_config
    kept = {key: getattr(source, key, None) for key in KEPT_GENERATION_KEYS}
    return GenerationConfig(
        **{key: value for key, value in kept.items() if value is not None},
        do_sample=False,
        num_beams=1,
    )


def ignored_generation_settings(model) -> dict:
    """The checkpoint's generation settings that `plain_generation_config` leaves out."""
    skip = KEPT_GENERATION_KEYS | {"max_length", "max_new_tokens", "do_sample", "num_beams"}
    return {
        key: value
        for key, value in model.generation_config.to_diff_dict().items()
        if key not in skip and not key.startswith("_") and key != "transformers_version"
    }


def use_plain_generation(model) -> dict:
    """Give `model` the plain generation config (so that `generate` applies no processors the
    checkpoint asks for: transformers fills every unset field of a config passed to `generate`
    from the model's own) and return what results files record about it."""
    ignored = ignored_generation_settings(model)
    model.generation_config = plain_generation_config(model)
    return {
        "do_sample": False,
        "num_beams": 1,
        "logits_processors": "none",
        "ignored_checkpoint_settings": ignored,
    }


class _AssistedInternals(logging.Filter):
    """Drops the deprecation warning that transformers' own assisted generation causes: its
    AssistedCandidateGenerator passes a generation_config together with min_new_tokens and
    max_new_tokens to the assistant's `generate` (transformers 5.24). Our calls pass one or
    the other, and the filter is installed only around an assisted call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passing `generation_config` together with")


@contextlib.contextmanager
def assisted_generation_warnings_hidden() -> Iterator[None]:
    """Around transformers' assisted generation: hide the warning its internals cause."""
    logger = logging.getLogger("transformers.generation.utils")
    quiet = _AssistedInternals()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def assisted_inputs(large, input_ids: torch.Tensor) -> dict:
    """Extra inputs for `large.generate(..., assistant_model=small)` that keep an
    encoder-decoder assistant's cache right. transformers 5.25 decides whether the assistant's
    decoder ids repeat its cached ones by comparing their length with the *encoder's* attention
    mask, unless a decoder attention mask is given: without one the assistant re-reads its whole
    draft every round, its cache and positions grow past the sequence (BART: IndexError in the
    position table; T5: drafts from a wrong cache, lossless but slow). An all-ones decoder mask
    for the start token changes nothing else (docs/transformers-5.25-assisted.md)."""
    if not large.config.is_encoder_decoder:
        return {}
    return {
        "decoder_attention_mask": torch.ones(
            input_ids.shape[0], 1, dtype=torch.long, device=input_ids.device
        )
    }


def check_same_tokenizer(small_tokenizer, large_tokenizer) -> None:
    """The decoders compare token ids: both models must read them with one vocabulary and the
    same special tokens (their embeddings may still be padded to different sizes)."""
    if small_tokenizer.get_vocab() != large_tokenizer.get_vocab():
        raise UserError(
            f"the small and large models' tokenizers differ ({len(small_tokenizer)} vs "
            f"{len(large_tokenizer)} tokens, or other ids); pair two models trained with the "
            "same tokenizer"
        )
    if small_tokenizer.all_special_ids != large_tokenizer.all_special_ids:
        raise UserError(
            "the small and large models' tokenizers have different special tokens "
            f"({small_tokenizer.all_special_tokens} vs {large_tokenizer.all_special_tokens})"
        )


def check_loaded_pair(small, small_tokenizer, large, large_tokenizer) -> int:
    """Refuse (UserError) two loaded models that cannot decode together; return the number of
    token ids they share, the decoders' `vocab_size`."""
    from bild_align.core.decoding import check_pair

    check_same_tokenizer(small_tokenizer, large_tokenizer)
    try:
        check_pair(small, large, len(large_tokenizer))
    except ValueError as error:  # mismatched vocabularies, special tokens, model kinds, ...
        raise UserError(str(error)) from None
    return len(large_tokenizer)


@dataclasses.dataclass
class LoadedPair:
    small: Any
    large: Any
    tokenizer: Any  # the large model's; `check_loaded_pair` made sure the small one's is equal
    small_revision: str
    large_revision: str
    vocab_size: int  # the token ids the pair shares: the decoders' `vocab_size`


def load_pair(small: str, large: str, *, dtype: str, device) -> LoadedPair:
    """The large model, then the small one on the same device, refused (UserError) unless the
    two can decode together."""
    large_model, tokenizer, large_revision = load_seq2seq_or_causal(
        large, dtype=dtype, device=device
    )
    small_model, small_tokenizer, small_revision = load_seq2seq_or_causal(
        small, dtype=dtype, device=large_model.device
    )
    vocab_size = check_loaded_pair(small_model, small_tokenizer, large_model, tokenizer)
    drafter = prepare_drafter(small_model, large_model, small, large_revision)
    if drafter["shares_encoder"]:
        logger.info(
            "bild-align: %s is a drafter of this large model: one encoder in memory, one "
            "encoder pass per input",
            small,
        )
    if drafter["vocab"]:
        logger.info("bild-align: %s scores %d token ids at each step", small, drafter["vocab"])
    return LoadedPair(
        small_model, large_model, tokenizer, small_revision, large_revision, vocab_size
    )


def use_drafter(small, large) -> dict:
    """`prepare_drafter` for two models loaded with `from_pretrained` (their folders are read
    off them): what `load_pair` and `generate(custom_generate=...)` do, for `bild_generate`.

        small = AutoModelForSeq2SeqLM.from_pretrained("drafters/demo-1")
        use_drafter(small, large)   # {"shares_encoder": True, "vocab": None}
    """
    folder = str(getattr(small, "name_or_path", "") or "")
    if not folder or not Path(folder).is_dir():
        return {"shares_encoder": False, "vocab": None}
    large_name = str(getattr(large, "name_or_path", "") or "")
    return prepare_drafter(small, large, folder, lambda: model_revision(large, large_name))


# encoder-decoder families whose position tables end at max_position_embeddings (T5's relative
# positions have no such end; M2M100 / NLLB grow their sinusoids on demand)
FIXED_POSITION_TABLES = frozenset(
    {"bart", "mbart", "marian", "pegasus", "plbart", "blenderbot", "blenderbot-small"}
)


def position_limit(model) -> int | None:
    """How many positions the model's position tables hold, or None where they have no end."""
    config = model.config
    if getattr(config, "model_type", None) not in FIXED_POSITION_TABLES:
        return None
    return getattr(config, "max_position_embeddings", None) or None


def fit_lengths(
    models: dict, max_source_length: int | None, max_new_tokens: int | None, defaults: tuple
) -> tuple[int, int]:
    """(max_source_length, max_new_tokens) that every model in `models` (name -> model) can
    embed. A length the user gave (not None) past a position table is refused (UserError)
    before any work starts; a default (`defaults`: the task's) past it is lowered to fit. The
    decoder embeds the start token and, when a check feeds the last draft, every new token,
    so `max_new_tokens` + 1 positions must fit."""
    source = max_source_length or defaults[0]
    new = max_new_tokens or defaults[1]
    limits = {name: position_limit(model) for name, model in models.items()}
    limits = {name: limit for name, limit in limits.items() if limit}
    if not limits:
        return source, new
    name = min(limits, key=limits.get)
    limit = limits[name]
    if max_new_tokens and max_new_tokens + 1 > limit:
        raise UserError(
            f"--max-new-tokens {max_new_tokens}: {name} embeds at most {limit} output positions "
            f"(its max_position_embeddings, the start token included); use at most {limit - 1}"
        )
    if max_source_length and max_source_length > limit:
        raise UserError(
            f"--max-source-length {max_source_length}: {name} reads at most {limit} input "
            f"tokens (its max_position_embeddings); use at most {limit}"
        )
    return min(source, limit), min(new, limit - 1)
