"""BiLD inside transformers' own `generate`, through its `custom_generate` hook.

    import bild_align
    out = large.generate(**inputs, assistant_model=small, custom_generate=bild_align.generate_bild,
                         fallback_threshold=0.6, rollback_threshold=2.0, max_new_tokens=64)
    out = large.generate(**inputs, assistant_model=small, trust_remote_code=True,
                         custom_generate=bild_align.CUSTOM_GENERATE)   # the same, loaded as a repo
    out = large.generate(..., custom_generate="you/bild", trust_remote_code=True)  # export-generate
    out = large.generate(..., return_dict_in_generate=True)
    out.sequences, out.bild_stats.large_calls_per_token, out.bild_row_stats[0]
    out = large.generate(..., speculative=True, num_assistant_tokens=4)   # speculative decoding

transformers calls a custom method in one of two ways, and `generate_bild` serves both:
- a folder or Hub repository (a string: `CUSTOM_GENERATE`, or a folder `bild-align
  export-generate` wrote): the method receives `generate`'s own arguments untouched;
- a callable: transformers first prepares the inputs (it runs the large model's encoder and
  builds its cache, which BiLD does not use) and then, in transformers 5.x, drops
  `assistant_model` before the call; `generate_bild` reads it back from the `generate` call.
Either way the tokens are `bild_generate`'s (or `speculative_generate`'s) for the same inputs
and settings: with rollback_threshold=0 exactly `generate`'s greedy output. Without
thresholds, a `bild_policy.json` that `bild-align tune --save` left in the small model's folder
is used. What `generate` could do but BiLD cannot honour (beam search, several sequences per
input, logits processors, stopping criteria other than the length and EOS, streamers, scores)
is refused by name with a ValueError, never ignored.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.generation.utils import (
    GenerateDecoderOnlyOutput,
    GenerateEncoderDecoderOutput,
)

from bild_align.core.checks import is_encoder_decoder
from bild_align.core.decoding import bild_generate, speculative_generate
from bild_align.core.policies import BiLDPolicy
from bild_align.core.stats import BiLDOutput, BiLDStats
from bild_align.models.fallback_heads import HEAD_FILE
from bild_align.models.saved_policy import POLICY_FILE
from bild_align.resources import GENERATE_REPO

log = logging.getLogger(__name__)

# the folder transformers loads as a custom_generate repository (`custom_generate=` this path)
CUSTOM_GENERATE = str(GENERATE_REPO)
THRESHOLDS = ("fallback_threshold", "rollback_threshold", "max_small_steps", "fallback_rule")
# generation settings that make `generate` do something BiLD does not, with their neutral value
NEUTRAL_SETTINGS = {
    "num_beams": 1, "num_beam_groups": 1, "penalty_alpha": None, "num_return_sequences": 1,
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "force_words_ids": None,
    "constraints": None, "min_length": 0, "min_new_tokens": None, "forced_eos_token_id": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "sequence_bias": None,
    "guidance_scale": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
    "min_p": None, "top_h": None, "exponential_decay_length_penalty": None,
    "renormalize_logits": False, "remove_invalid_values": False, "watermarking_config": None,
    "stop_strings": None, "max_time": None, "diversity_penalty": 0.0, "dola_layers": None,
    "prompt_lookup_num_tokens": None, "token_healing": False, "output_attentions": False,
    "output_hidden_states": False, "output_scores": False, "output_logits": False,
}  # fmt: skip
# what a prepared `generate` call hands a callable that BiLD honours through the settings
HONOURED_PROCESSORS = {"TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"}
HONOURED_CRITERIA = {"MaxLengthCriteria", "EosTokenCriteria"}
# model inputs of a prepared call that BiLD rebuilds itself
PREPARED_INPUTS = {
    "attention_mask", "encoder_outputs", "cache", "past_key_values", "use_cache",
    "logits_to_keep", "position_ids", "cache_position",
}  # fmt: skip


@dataclass
class BiLDEncoderDecoderOutput(GenerateEncoderDecoderOutput):
    """`generate`'s output with BiLD's counts: `bild_stats` (totals), `bild_row_stats` (per
    row) and `from_small` (per row, whether each new token was drafted by the small model)."""

    bild_stats: BiLDStats | None = None
    bild_row_stats: list[BiLDStats] | None = None
    from_small: list[list[bool]] | None = None


@dataclass
class BiLDDecoderOnlyOutput(GenerateDecoderOnlyOutput):
    """As `BiLDEncoderDecoderOutput`, for decoder-only models."""

    bild_stats: BiLDStats | None = None
    bild_row_stats: list[BiLDStats] | None = None
    from_small: list[list[bool]] | None = None


def generate_bild(
    model,
    inputs: torch.Tensor | None = None,
    generation_config=None,
    logits_processor=None,
    stopping_criteria=None,
    prefix_allowed_tokens_fn=None,
    synced_gpus: bool | None = None,
    assistant_model=None,
    streamer=None,
    negative_prompt_ids=None,
    negative_prompt_attention_mask=None,
    *,
    inputs_tensor: torch.Tensor | None = None,
    fallback_threshold: float | None = None,
    rollback_threshold: float | None = None,
    max_small_steps: int | None = None,
    fallback_rule: str | None = None,
    fallback_head=None,
    speculative: bool = False,
    num_assistant_tokens: int | None = None,
    seed: int | None = None,
    tokenizer=None,
    assistant_tokenizer=None,
    **kwargs,
):
    """`model.generate(..., custom_generate=...)` with `model` the large model and
    `assistant_model` the small one. BiLD's settings are extra keyword arguments (see
    `bild_generate`); `speculative=True` runs speculative decoding instead, drafting
    `num_assistant_tokens` (default 4) per check; `seed` seeds sampling (row i: seed + i)."""
    prepared = inputs_tensor is not None  # the callable route: generate prepared the inputs
    if prepared:  # transformers dropped these two: read them from its `generate` call
        assistant_model = assistant_model or _of_calling_generate("assistant_model")
        streamer = streamer or _of_calling_generate("streamer")
    if assistant_model is None:
        raise ValueError(
            "BiLD needs the small model: pass assistant_model=small to generate (the model "
            "generate is called on is the large one)"
        )
    _refuse_unhonoured(
        prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
        synced_gpus=synced_gpus,
        streamer=streamer,
        negative_prompt_ids=negative_prompt_ids,
        negative_prompt_attention_mask=negative_prompt_attention_mask,
    )
    vocab_size = _shared_vocab_size(tokenizer, assistant_tokenizer)
    from bild_align.models.loading import use_drafter

    use_drafter(assistant_model, model)  # a drafter: one encoder pass, its kept tokens
    if prepared:
        input_ids, attention_mask, config = _from_prepared_call(
            model, inputs, inputs_tensor, generation_config, logits_processor,
            stopping_criteria, kwargs,
        )  # fmt: skip
        prefix_length = inputs.shape[1]
    else:
        _refuse_lists(logits_processor, stopping_criteria)
        input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
        attention_mask = kwargs.pop("attention_mask", None)
        if input_ids is None:
            raise ValueError("generate with BiLD needs input_ids (or inputs)")
        config, model_kwargs = model._prepare_generation_config(generation_config, **kwargs)
        _refuse_model_inputs(set(model_kwargs) - {"use_cache"})
        _refuse_settings(config)
        prefix_length = 1 if is_encoder_decoder(model) else input_ids.shape[1]
    device = model.device
    input_ids = input_ids.to(device)
    attention_mask = None if attention_mask is None else attention_mask.to(device)
    sampling = {
        "max_new_tokens": _max_new_tokens(config, prefix_length, prepared),
        "do_sample": bool(config.do_sample),
        "temperature": 1.0 if config.temperature is None else float(config.temperature),
        "top_k": int(config.top_k or 0),
        "top_p": 1.0 if config.top_p is None else float(config.top_p),
        "seed": seed,
    }
    given = {
        "fallback_threshold": fallback_threshold,
        "rollback_threshold": rollback_threshold,
        "max_small_steps": max_small_steps,
        "fallback_rule": fallback_rule,
        "fallback_head": fallback_head,
    }
    given = {name: value for name, value in given.items() if value is not None}
    if speculative:
        if given:
            raise ValueError(
                f"speculative=True drafts a fixed number of tokens: {', '.join(given)} "
                "are BiLD's settings (give num_assistant_tokens instead)"
            )
        gamma = 4 if num_assistant_tokens is None else num_assistant_tokens
        out = speculative_generate(
            assistant_model, model, input_ids, attention_mask,
            gamma=gamma, vocab_size=vocab_size, **sampling,
        )  # fmt: skip
    else:
        if num_assistant_tokens is not None:
            raise ValueError(
                "num_assistant_tokens is speculative decoding's draft length; BiLD drafts until "
                "the small model is unsure (max_small_steps caps it), or pass speculative=True"
            )
        policy, vocab_size = _policy(model, assistant_model, given, vocab_size)
        out = bild_generate(
            assistant_model, model, input_ids, attention_mask,
            policy=policy, vocab_size=vocab_size, **sampling,
        )  # fmt: skip
    return _as_generate_output(model, out, bool(config.return_dict_in_generate))


def _of_calling_generate(name: str):
    """transformers 5.x hands a custom_generate *callable* neither `assistant_model` nor the
    streamer (its `_extract_generation_mode_kwargs` replaces them with the callable's own
    extra arguments): read the argument `name` from the `generate` call that called us."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_name != "generate":
        frame = frame.f_back
    return None if frame is None else frame.f_locals.get(name)


def _refuse_unhonoured(**arguments) -> None:
    for name, value in arguments.items():
        if value not in (None, False):
            raise ValueError(f"generate with BiLD cannot honour {name}; leave it out")


def _refuse_lists(logits_processor, stopping_criteria) -> None:
    lists = {"logits_processor": logits_processor, "stopping_criteria": stopping_criteria}
    for name, given in lists.items():
        if given:
            kinds = ", ".join(type(item).__name__ for item in given)
            raise ValueError(
                f"generate with BiLD cannot honour {name} ({kinds}): BiLD stops at EOS or "
                "max_new_tokens and decides on the models' own distributions"
            )


def _refuse_model_inputs(names: set[str]) -> None:
    if names:
        raise ValueError(
            f"generate with BiLD takes input_ids and attention_mask only; it cannot honour "
            f"{', '.join(sorted(names))}"
        )


def _refuse_settings(config) -> None:
    refused = [
        f"{name}={getattr(config, name)!r}"
        for name, neutral in NEUTRAL_SETTINGS.items()
        if getattr(config, name, None) not in (None, neutral, [], {})
    ]
    if refused:
        raise ValueError(
            f"generate with BiLD cannot honour {', '.join(refused)} (greedy or sampled "
            "decoding of one sequence per input only); pass the neutral value, e.g. num_beams=1, "
            "or edit the model's generation_config"
        )


def _shared_vocab_size(tokenizer, assistant_tokenizer) -> int | None:
    both = tokenizer is not None and assistant_tokenizer is not None
    if both and tokenizer.get_vocab() != assistant_tokenizer.get_vocab():
        raise ValueError(
            "the large and small models' tokenizers differ: BiLD compares token ids, so "
            "pair two models trained with the same tokenizer"
        )
    tokenizer = tokenizer or assistant_tokenizer
    return None if tokenizer is None else len(tokenizer)


def _from_prepared_call(
    model, inputs, inputs_tensor, config, logits_processor, stopping_criteria, model_kwargs
):
    """(input_ids, attention_mask, config) of a call transformers prepared for a callable."""
    _refuse_settings(config)  # first: a setting's name says more than the processor it made
    processors = {type(item).__name__ for item in logits_processor or []}
    criteria = {type(item).__name__ for item in stopping_criteria or []}
    unhonoured = sorted((processors - HONOURED_PROCESSORS) | (criteria - HONOURED_CRITERIA))
    if unhonoured:
        raise ValueError(
            f"generate with BiLD cannot honour {', '.join(unhonoured)}: BiLD stops at EOS or "
            "max_new_tokens and decides on the models' own distributions"
        )
    _refuse_model_inputs(set(model_kwargs) - PREPARED_INPUTS)
    if is_encoder_decoder(model) and inputs.shape[1] != 1:
        _refuse_model_inputs({"decoder_input_ids"})
    return inputs_tensor, model_kwargs.get("attention_mask"), config


def _max_new_tokens(config, prefix_length: int, prepared: bool) -> int:
    """`generate`'s length rule: max_new_tokens, else max_length counting the prefix (the
    prompt, or an encoder-decoder's start token)."""
    if config.max_new_tokens is not None and not prepared:
        return config.max_new_tokens
    new_tokens = config.max_length - prefix_length
    if new_tokens < 1:
        raise ValueError(
            f"max_length={config.max_length} leaves no room after the {prefix_length} "
            "input tokens; pass max_new_tokens"
        )
    return new_tokens


def _policy(large, small, given: dict, vocab_size: int | None) -> tuple[BiLDPolicy, int | None]:
    """The thresholds given; without any, the policy tuned for this pair if the small model's
    folder (or its Hub repository) holds one; else the defaults."""
    folder = _policy_folder(small)
    if given.get("fallback_rule") == "learned" and "fallback_head" not in given:
        if folder is None:
            raise ValueError(
                "fallback_rule='learned' needs the small model's fallback head: pass "
                "fallback_head=bild_align.load_fallback_head(small_dir)"
            )
        from bild_align.models.fallback_heads import load_fallback_head

        given = {**given, "fallback_head": load_fallback_head(folder)}
    if given or folder is None:
        return BiLDPolicy(**given), vocab_size
    from bild_align.models.loading import model_revision
    from bild_align.models.saved_policy import read_saved, saved_policy_for

    record = read_saved(folder)
    vocab_size = vocab_size or record["pair"]["vocab_size"]
    policy, _ = saved_policy_for(folder, model_revision(large, _name(large)), vocab_size)
    log.info("BiLD: using the policy tuned for this pair in %s", folder / POLICY_FILE)
    return policy, vocab_size


def _name(model) -> str:
    """The folder or Hub id the model was loaded from ("" for one built in code)."""
    return str(getattr(model, "name_or_path", "") or model.config.name_or_path or "")


_HUB_POLICY_FOLDERS: dict[tuple[str, str | None], Path | None] = {}


def _policy_folder(small) -> Path | None:
    """The folder holding the small model's `bild_policy.json`: its own folder, or the Hub
    snapshot of the repository it was loaded from (fetched once per process); None without."""
    name = _name(small)
    if not name or Path(name).is_dir():
        return Path(name) if name and (Path(name) / POLICY_FILE).is_file() else None
    revision = getattr(small.config, "_commit_hash", None)
    if (name, revision) not in _HUB_POLICY_FOLDERS:
        _HUB_POLICY_FOLDERS[name, revision] = _fetch_policy(name, revision)
    return _HUB_POLICY_FOLDERS[name, revision]


def _fetch_policy(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import hf_hub_download

    try:
        policy = Path(hf_hub_download(repo_id, POLICY_FILE, revision=revision))
    except Exception:  # noqa: BLE001 - no such file, offline, not a Hub id: no saved policy
        return None
    # the learned rule's head, when the repository has one (a policy with another rule needs none)
    with contextlib.suppress(Exception):
        hf_hub_download(repo_id, HEAD_FILE, revision=revision)
    return policy.parent


def _as_generate_output(model, out: BiLDOutput, as_dict: bool):
    if not as_dict:
        return out.sequences
    kind = BiLDEncoderDecoderOutput if is_encoder_decoder(model) else BiLDDecoderOnlyOutput
    return kind(
        sequences=out.sequences,
        bild_stats=out.stats,
        bild_row_stats=out.row_stats,
        from_small=out.from_small,
    )
