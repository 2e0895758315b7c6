"""Drafters made from the large model: its encoder (encoder-decoder) or its embeddings and
output layer (decoder-only), and a few of its decoder layers, as an ordinary model folder.

    drafter, layers = build_drafter(large, layers=2, init="first-last")   # a new model
    kept = most_used_tokens(tokenized_targets, k=8000, always=special_ids(large, tokenizer))
    save_drafter(drafter, tokenizer, "drafter-2", made_from={...}, layers=layers,
                 init="first-last", vocab={"ids": kept})   # vocab: only with --vocab-size
    prepare_drafter(small, large, small_dir, large_revision)  # load_pair does it: tie, reduce

A drafter's encoder is the large model's, weight for weight: `train` keeps it frozen, and
`tie_shared_encoder` makes the two models hold one encoder module, so that every decoder
encodes each input once (`core.engines.shared_encoder`). `bild_drafter.json` records what the folder
was made from, and the output layer's kept token ids when made with `--vocab-size`:
wherever bild-align loads the drafter it scores only those (`core.engines.output_layer`).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from bild_align.errors import UserError
from bild_align.runs.files import write_json_atomic

logger = logging.getLogger(__name__)

DRAFTER_FILE = "bild_drafter.json"
# model_type -> (config key of the decoder's layer count, the state-dict prefix of a layer)
FAMILIES = {
    **dict.fromkeys(("t5", "mt5", "umt5"), ("num_decoder_layers", r"decoder\.block\.(\d+)\.")),
    **dict.fromkeys(
        ("bart", "mbart", "marian", "pegasus"),
        ("decoder_layers", r"model\.decoder\.layers\.(\d+)\."),
    ),
    **dict.fromkeys(
        ("llama", "mistral", "qwen2", "qwen3"), ("num_hidden_layers", r"model\.layers\.(\d+)\.")
    ),
}


def family(model) -> tuple[str, str]:
    kind = model.config.model_type
    if kind not in FAMILIES:
        supported = ", ".join(sorted(FAMILIES))
        raise UserError(f"a drafter cannot be made from a {kind} model; supported: {supported}")
    return FAMILIES[kind]


def decoder_depth(model) -> int:
    key, _ = family(model)
    return int(getattr(model.config, key))


def chosen_layers(total: int, count: int, init: str) -> list[int]:
    """Which of the large decoder's `total` layers the drafter's `count` copy: `first-last`
    (the first count-1 and the last, as Distil-Whisper), `spread` (evenly), or `first`."""
    if not 1 <= count <= total:
        raise UserError(f"--layers {count}: the large model's decoder has {total} layers")
    if init == "first" or count == 1:
        return list(range(count))
    if init == "spread":
        return [round(index * (total - 1) / (count - 1)) for index in range(count)]
    return [*range(count - 1), total - 1]


def build_drafter(large, layers: int, init: str = "first-last"):
    """A new model of the large model's class with `layers` decoder layers copied from it and
    everything else (encoder, embeddings, norms, output layer) identical. Returns the model
    and the layers taken."""
    key, pattern = family(large)
    chosen = chosen_layers(decoder_depth(large), layers, init)
    config = copy.deepcopy(large.config)
    setattr(config, key, layers)
    if getattr(config, "layer_types", None):  # per-layer attention kinds follow the layers
        config.layer_types = [config.layer_types[index] for index in chosen]
    drafter = type(large)(config)
    head, embedding = large.get_output_embeddings(), large.get_input_embeddings()
    if head is not None and head.weight is not embedding.weight:  # an untied head stays so
        drafter.get_output_embeddings().weight = torch.nn.Parameter(head.weight.detach().clone())
    source = large.state_dict()
    layer = re.compile(pattern)

    def from_large(name: str) -> str:
        found = layer.match(name)
        if found is None:
            return name
        mapped = f"{name[: found.start(1)]}{chosen[int(found.group(1))]}{name[found.end(1) :]}"
        # T5 keeps its relative-position table in the first layer only: keep that one
        return mapped if mapped in source else name

    state = {name: source[from_large(name)] for name in drafter.state_dict()}
    drafter.load_state_dict(state, strict=True)
    drafter.generation_config = copy.deepcopy(large.generation_config)
    return drafter.to(large.dtype).eval(), chosen


def special_ids(model, tokenizer) -> set[int]:
    """The ids a drafter's output layer always keeps: start, end, padding and unknown."""
    names = ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id")
    found: set[int] = set()
    for source in (model.config, model.generation_config, tokenizer):
        for name in (*names, "unk_token_id"):
            value = getattr(source, name, None)
            values = value if isinstance(value, list | tuple) else [value]
            found.update(int(item) for item in values if isinstance(item, int) and item >= 0)
    return found


def most_used_tokens(targets: Iterable[list[int]], k: int, always: set[int]) -> list[int]:
    """The ids of the `k` tokens the target sequences use most (ties: the lower id), the
    `always` ones among them, sorted; fewer when the targets use fewer."""
    counts = Counter(token for target in targets for token in target)
    for token in always:
        counts.pop(token, None)
    room = max(0, k - len(always))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:room]
    return sorted(always | {token for token, _ in ranked})


def restrict_vocab(model, kept: list[int]) -> None:
    """Replace the model's output layer by one that scores only the `kept` ids."""
    from bild_align.core.engines.output_layer import ReducedOutputLayer, output_size

    layer = model.get_output_embeddings()
    if isinstance(layer, ReducedOutputLayer):
        return
    ids = torch.tensor(kept, dtype=torch.long)
    model.set_output_embeddings(ReducedOutputLayer(layer.weight, ids, output_size(model)))


def save_drafter(
    drafter,
    tokenizer,
    output: Path,
    *,
    made_from: dict,
    layers: list[int],
    init: str,
    vocab: dict | None = None,
):
    """The model folder (full output layer: the Auto classes load it as any model) and its
    record; `vocab` ({"ids": kept ids, "calibration": where they were counted}) is recorded."""
    drafter.save_pretrained(output)
    if tokenizer is not None:
        tokenizer.save_pretrained(output)
    record = {
        "made_from": made_from,
        "layers": layers,
        "init": init,
        "shares": "encoder" if drafter.config.is_encoder_decoder else "embeddings",
        **({"vocab": vocab} if vocab else {}),
    }
    write_json_atomic(Path(output) / DRAFTER_FILE, record)
    return record


def read_record(folder: str | Path | None) -> dict | None:
    """A drafter folder's record; None for any other folder, a Hub id, or None."""
    if not folder:
        return None
    path = Path(folder).expanduser() / DRAFTER_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{path} is damaged; make the drafter again") from None


def keep_drafter_record(small_model: str | None, output: str | Path) -> None:
    """After training a drafter (its shared encoder frozen), its record goes with the trained
    model, so that the pair still shares the encoder (verified again when loaded) and keeps
    its output layer's ids."""
    record = read_record(small_model)
    if record is not None and (record.get("shares") == "encoder" or record.get("vocab")):
        write_json_atomic(Path(output) / DRAFTER_FILE, {**record, "aligned_from": small_model})


def _encoder_holder(model):
    """The module holding the encoder and the input embedding (T5: the model; BART: .model)."""
    return model.model if hasattr(getattr(model, "model", None), "encoder") else model


def encoders_equal(small, large) -> bool:
    small_state, large_state = small.get_encoder().state_dict(), large.get_encoder().state_dict()
    return small_state.keys() == large_state.keys() and all(
        torch.equal(small_state[name], large_state[name].to(small_state[name].device))
        for name in small_state
    )


def tie_shared_encoder(
    small, large, small_dir: str | None, large_revision: str, record: dict | None = None
) -> bool:
    """Make a drafter of this large model hold the large model's encoder module (and input
    embedding), so that memory holds one encoder and the decoders encode once. True when
    tied; a drafter of another large model stays an ordinary small model (said in a note).
    `record`: the folder's drafter record when the caller has read it already."""
    record = record or read_record(small_dir)
    if record is None or record.get("shares") != "encoder":
        return False
    made_from = record.get("made_from", {})
    if made_from.get("large_revision") != large_revision or not encoders_equal(small, large):
        logger.info(
            "note: %s is a drafter of %s (revision %s), not of this large model: it runs as an "
            "ordinary small model (its own encoder pass per input)",
            small_dir, made_from.get("large"), made_from.get("large_revision"),
        )  # fmt: skip
        return False
    small_holder, large_holder = _encoder_holder(small), _encoder_holder(large)
    small_holder.encoder = large_holder.encoder
    if hasattr(large_holder, "shared"):
        small_holder.shared = large_holder.shared
        small_holder.decoder.embed_tokens = large_holder.shared
    return True


def shares_encoder(small, large) -> bool:
    """Whether the two models hold one encoder module (a tied drafter)."""
    return bool(small.config.is_encoder_decoder) and small.get_encoder() is large.get_encoder()


def prepare_drafter(
    small, large, small_dir: str | None, large_revision: str | Callable[[], str]
) -> dict:
    """What every decoder does with a drafter (any other small model is left as it is): tie
    its encoder to the large model's when it is this large model's (`tie_shared_encoder`),
    and score only its recorded token ids. Returns {"shares_encoder": bool, "vocab": K or
    None}. Done once per pair (a mark on the small model), so that `generate` may call it on
    every call; `large_revision` may be a function, called only when the work is done."""
    marked = getattr(small, "_bild_drafter_prepared", None)
    if marked is not None and marked[0]() is large:
        return marked[1]
    prepared = {"shares_encoder": False, "vocab": None}
    record = read_record(small_dir)
    if record is not None:
        revision = large_revision() if callable(large_revision) else large_revision
        prepared["shares_encoder"] = tie_shared_encoder(small, large, small_dir, revision, record)
        kept = (record.get("vocab") or {}).get("ids")
        if kept:
            restrict_vocab(small, kept)
            prepared["vocab"] = len(kept)
    small._bild_drafter_prepared = (weakref.ref(large), prepared)
    return prepared
