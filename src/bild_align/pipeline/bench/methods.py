"""`bild-align bench`'s pairs and methods: the preset shapes and the random pairs built from
them, every decoder it times (with the candidate settings of the tunable ones), and the padding
of batched rows.

    small, large, inputs = build_pair("t5", eps=0.01, seed=0, device=cpu, dtype=torch.float32)
    methods = bench_methods(small, large, config, tune_inputs, device)
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from bild_align.configs import BenchConfig
from bild_align.core.decoding import (
    BiLDStats,
    bild_generate,
    speculative_generate,
)
from bild_align.core.policies import FALLBACK_THRESHOLD, MAX_SMALL_STEPS, ROLLBACK_THRESHOLD
from bild_align.measure.harness import Method, fastest
from bild_align.models.loading import assisted_generation_warnings_hidden, assisted_inputs
from bild_align.models.toy import (
    deepen,
    deepen_bart,
    deepen_llama,
    random_bart,
    random_llama,
    random_t5,
)

# Shapes of the real checkpoints' families; the large model keeps the small one's width (so that
# its agreement can be controlled) and takes the large checkpoint's depth.
PRESETS: dict[str, dict] = {
    "t5": dict(
        vocab_size=32128,
        d_model=512,
        num_heads=8,
        d_ff=2048,
        gated=False,
        small_layers=6,
        large_layers=24,
    ),  # T5-small (6 layers) vs T5-large (24)
    "mt5": dict(
        vocab_size=250112,
        d_model=512,
        num_heads=8,
        d_ff=1024,
        gated=True,
        small_layers=8,
        large_layers=24,
    ),  # mT5-small (8 layers) vs mT5-large (24)
    "bart": dict(
        family="bart",
        vocab_size=50265,
        d_model=768,
        num_heads=12,
        ffn_dim=3072,
        small_layers=1,
        large_layers=6,
    ),  # a distilbart-style 1-layer decoder vs BART-base's 6 (BART layers, one encoder layer)
    "llama": dict(
        decoder_only=True,
        vocab_size=32000,
        hidden_size=512,
        num_heads=8,
        small_layers=4,
        large_layers=16,
    ),  # a decoder-only pair, Llama layers
    "tiny": dict(
        vocab_size=512,
        d_model=64,
        num_heads=4,
        d_ff=256,
        gated=False,
        small_layers=1,
        large_layers=4,
    ),  # seconds on a laptop; for smoke tests
}


def build_pair(preset: str, eps: float, seed: int, device: torch.device, dtype: torch.dtype):
    shape = dict(PRESETS[preset])
    small_layers, large_layers = shape.pop("small_layers"), shape.pop("large_layers")
    extra = large_layers - small_layers
    if shape.pop("decoder_only", False):
        small = random_llama(
            num_layers=small_layers, confidence=8.0, eos_weight=0.0, seed=seed, **shape
        )
        large = deepen_llama(small, extra_layers=extra, eps=eps, seed=seed + 1)
    elif "family" in shape:
        small = random_bart(
            num_layers=small_layers, confidence=8.0, eos_weight=0.0, seed=seed, **shape
        )
        large = deepen_bart(small, extra_layers=extra, eps=eps, seed=seed + 1)
    else:
        small = random_t5(
            num_layers=small_layers, confidence=8.0, eos_weight=0.0, seed=seed, **shape
        )
        large = deepen(small, extra_layers=extra, eps=eps, seed=seed + 1)
    return small.to(device, dtype), large.to(device, dtype)


def generate_method(
    model, max_new_tokens: int, assistant=None, do_sample=False, temperature=1.0, **assist
) -> Callable:
    def run(input_ids, attention_mask=None):
        # transformers reads the assistant settings from the assistant's generation config:
        # set them for this call only, and leave the model as it was
        saved = None if assistant is None else assistant.generation_config
        if assistant is not None:
            assistant.generation_config = copy.deepcopy(saved)
            for key, value in assist.items():
                setattr(assistant.generation_config, key, value)
        try:
            with assisted_generation_warnings_hidden():
                sequences = model.generate(
                    input_ids,
                    attention_mask=attention_mask,
                    do_sample=do_sample,
                    temperature=temperature,
                    max_new_tokens=max_new_tokens,
                    assistant_model=assistant,
                    **({} if assistant is None else assisted_inputs(model, input_ids)),
                )
        finally:
            if assistant is not None:
                assistant.generation_config = saved
        return sequences, None

    return run


def ours(name: str, setting: dict, decoder, small, large, n: int, **settings) -> Method:
    """A method of our decoder family; its stats are counted (and its overhead measured)."""

    def run(input_ids, attention_mask=None):
        out = decoder(small, large, input_ids, attention_mask, max_new_tokens=n, **settings)
        return out.sequences, out.stats

    return Method(name, setting, run, stats=BiLDStats())


def assisted_candidates(small, large, n: int, config: BenchConfig) -> list[Method]:
    heuristic = {"num_assistant_tokens_schedule": "heuristic"}
    candidates = [
        Method(
            "assisted",
            heuristic,
            generate_method(
                large,
                n,
                small,
                **heuristic,
                num_assistant_tokens=20,
                assistant_confidence_threshold=0.4,
            ),
        )
    ]
    for k in config.assistant_tokens:
        for confidence in (0.0, 0.4):
            setting = {
                "num_assistant_tokens_schedule": "constant",
                "num_assistant_tokens": k,
                "assistant_confidence_threshold": confidence,
            }
            candidates.append(
                Method("assisted", setting, generate_method(large, n, small, **setting))
            )
    return candidates


def exact_candidates(small, large, n: int, config: BenchConfig) -> list[Method]:
    return [
        ours(
            "bild exact",
            {"rb": 0.0, "fb": fb, "max_small_steps": k},
            bild_generate,
            small,
            large,
            n,
            rollback_threshold=0.0,
            fallback_threshold=fb,
            max_small_steps=k,
        )
        for k in config.exact_max_small_steps
        for fb in config.exact_fallback_thresholds
    ]


def default_bild(small, large, n: int, name: str = "bild", **sampling) -> Method:
    """BiLD at the default thresholds (the ones every command uses)."""
    setting = {"rb": ROLLBACK_THRESHOLD, "fb": FALLBACK_THRESHOLD}
    setting |= {"temperature": 1.0} if sampling else {"max_small_steps": MAX_SMALL_STEPS}
    return ours(
        name,
        setting,
        bild_generate,
        small,
        large,
        n,
        rollback_threshold=ROLLBACK_THRESHOLD,
        fallback_threshold=FALLBACK_THRESHOLD,
        max_small_steps=MAX_SMALL_STEPS,
        **sampling,
    )


def samplingbench_methods(small, large, n: int, seed: int) -> list[Method]:
    sampled = {"do_sample": True, "temperature": 1.0, "seed": seed}
    return [
        Method(
            "large sample",
            {"temperature": 1.0},
            generate_method(large, n, do_sample=True, temperature=1.0),
        ),
        ours(
            "spec. sample",
            {"gamma": 4, "temperature": 1.0},
            speculative_generate,
            small,
            large,
            n,
            gamma=4,
            **sampled,
        ),
        default_bild(small, large, n, "bild sample", **sampled),
    ]


def bench_methods(small, large, config: BenchConfig, tune_inputs, device) -> list[Method]:
    """The large model first (the reference), then the baselines and ours; tunable methods at
    their fastest setting on `tune_inputs`."""
    n = config.max_new_tokens
    speculative = [
        ours("speculative", {"gamma": gamma}, speculative_generate, small, large, n, gamma=gamma)
        for gamma in config.gammas
    ]
    methods = [
        Method("large", {}, generate_method(large, n)),
        Method("small", {}, generate_method(small, n)),
        fastest(assisted_candidates(small, large, n, config), tune_inputs, device),
        fastest(exact_candidates(small, large, n, config), tune_inputs, device),
        fastest(speculative, tune_inputs, device),
        default_bild(small, large, n),
    ]
    if config.sampling:
        methods += samplingbench_methods(small, large, n, config.seed)
    return methods


BATCHED_SAMPLED = ("large sample", "spec. sample", "bild sample")  # with --sampling
BATCHED = ("large", "bild exact", "speculative", "bild", *BATCHED_SAMPLED)
SHARED = ("bild exact", "bild")  # ... and again with shared checks (rows kept in step)


def shared_checks(method: Method, small, large, n: int) -> Method:
    """A BiLD method at the same setting, checking every row with drafts together."""
    setting = method.setting
    return ours(
        f"{method.name} shared",
        setting | {"shared_checks": True},
        bild_generate,
        small,
        large,
        n,
        rollback_threshold=setting["rb"],
        fallback_threshold=setting["fb"],
        max_small_steps=setting["max_small_steps"],
        shared_checks=True,
    )


def padded(inputs: list[torch.Tensor], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of different lengths as one batch and its mask (decoder-only: left-padded)."""
    width = max(ids.shape[1] for ids in inputs)
    batch = torch.full((len(inputs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for row, ids in enumerate(inputs):
        span = slice(width - ids.shape[1], width) if left else slice(0, ids.shape[1])
        batch[row, span], mask[row, span] = ids[0], 1
    return batch, mask


def strip_padding(row: list[int], pad: int) -> list[int]:
    end = len(row)
    while end and row[end - 1] == pad:
        end -= 1
    return row[:end]
