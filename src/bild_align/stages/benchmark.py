"""Decoder micro-benchmark: BiLD beside large-only, small-only and transformers' assisted
generation, on the same inputs, in one run, at several levels of small/large agreement.

    bild-align bench --preset t5 --examples 8 --max-new-tokens 48 --eps 0,0.01,0.02

    config = BenchConfig(preset="tiny", examples=2)
    results = run_benchmark(config)        # dict, also written to config.output as JSON

Pairs come from `bild_align.toy_models`: the large model is the small one plus near-identity
layers (`eps` scales them; 0 means the two always agree), so the depth ratio mimics the real
pairs and the agreement is measured rather than assumed. Each tunable method is first timed at
a few settings on the first examples and then run at its fastest one, so that every method is
compared at its best setting. Runs are interleaved per example (drift hits all alike), after a
warm-up, with the device synchronised; only generation is timed. Beyond batch size 1
(`--batch-sizes`), the large model's batched `generate`, exact BiLD, speculative decoding and
BiLD (at the settings tuned at batch 1) each decode padded batches of that many inputs: those
rows report throughput (tokens/s) and the speedup over the large model at the same batch size;
exact BiLD and BiLD run twice there, each row on its own schedule and with shared checks.
"""

from __future__ import annotations

import copy
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bild_align.configs import BenchConfig, check
from bild_align.core.decoding import (
    BiLDStats,
    bild_generate,
    eos_token_ids,
    pad_token_id,
    speculative_generate,
)
from bild_align.core.policies import FALLBACK_THRESHOLD, MAX_SMALL_STEPS, ROLLBACK_THRESHOLD
from bild_align.errors import UserError
from bild_align.harness import Method, fastest, new_tokens, run_example, summaries, warm_up
from bild_align.io_utils import check_output_file, holds_json_keys, write_json_atomic
from bild_align.models import assisted_generation_warnings_hidden, check_dtype, resolve_device
from bild_align.timing import ForwardClock, environment, timed
from bild_align.toy_models import (
    agreement,
    deepen,
    deepen_bart,
    deepen_llama,
    random_bart,
    random_inputs,
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


def _generate_method(
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
                )
        finally:
            if assistant is not None:
                assistant.generation_config = saved
        return sequences, None

    return run


def _ours(name: str, setting: dict, decoder, small, large, n: int, **settings) -> Method:
    """A method of our decoder family; its stats are counted (and its overhead measured)."""

    def run(input_ids, attention_mask=None):
        out = decoder(small, large, input_ids, attention_mask, max_new_tokens=n, **settings)
        return out.sequences, out.stats

    return Method(name, setting, run, stats=BiLDStats())


def _assisted_candidates(small, large, n: int, config: BenchConfig) -> list[Method]:
    heuristic = {"num_assistant_tokens_schedule": "heuristic"}
    candidates = [
        Method(
            "assisted",
            heuristic,
            _generate_method(
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
                Method("assisted", setting, _generate_method(large, n, small, **setting))
            )
    return candidates


def _exact_candidates(small, large, n: int, config: BenchConfig) -> list[Method]:
    return [
        _ours(
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
        for k in config.small_steps
        for fb in config.exact_fallbacks
    ]


def _default_bild(small, large, n: int, name: str = "bild", **sampling) -> Method:
    """BiLD at the default thresholds (the ones every command uses)."""
    setting = {"rb": ROLLBACK_THRESHOLD, "fb": FALLBACK_THRESHOLD}
    setting |= {"temperature": 1.0} if sampling else {"max_small_steps": MAX_SMALL_STEPS}
    return _ours(
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


def _sampling_methods(small, large, n: int, seed: int) -> list[Method]:
    sampled = {"do_sample": True, "temperature": 1.0, "seed": seed}
    return [
        Method(
            "large sample",
            {"temperature": 1.0},
            _generate_method(large, n, do_sample=True, temperature=1.0),
        ),
        _ours(
            "spec. sample",
            {"gamma": 4, "temperature": 1.0},
            speculative_generate,
            small,
            large,
            n,
            gamma=4,
            **sampled,
        ),
        _default_bild(small, large, n, "bild sample", **sampled),
    ]


def _methods(small, large, config: BenchConfig, tune_inputs, device) -> list[Method]:
    """The large model first (the reference), then the baselines and ours; tunable methods at
    their fastest setting on `tune_inputs`."""
    n = config.max_new_tokens
    speculative = [
        _ours("speculative", {"gamma": gamma}, speculative_generate, small, large, n, gamma=gamma)
        for gamma in config.gammas
    ]
    methods = [
        Method("large", {}, _generate_method(large, n)),
        Method("small", {}, _generate_method(small, n)),
        fastest(_assisted_candidates(small, large, n, config), tune_inputs, device),
        fastest(_exact_candidates(small, large, n, config), tune_inputs, device),
        fastest(speculative, tune_inputs, device),
        _default_bild(small, large, n),
    ]
    if config.sampling:
        methods += _sampling_methods(small, large, n, config.seed)
    return methods


def _measure_level(config: BenchConfig, eps: float, device, dtype, progress) -> dict:
    small, large = build_pair(config.preset, eps, config.seed, device, dtype)
    inputs = [
        ids.to(device)
        for ids in random_inputs(
            config.examples,
            vocab_size=small.config.vocab_size,
            min_length=8,
            max_length=32,
            seed=config.seed + 7,
        )
    ]
    level_agreement = statistics.mean(
        agreement(small, large, ids, config.max_new_tokens) for ids in inputs
    )
    methods = _methods(
        small, large, config, inputs[: min(config.tune_examples, config.examples)], device
    )
    warm_up(methods, inputs[0])
    overhead: dict[int, list[float]] = {id(m): [] for m in methods if m.stats is not None}
    for input_ids in inputs:
        results = run_example(
            methods, input_ids, None, device, on_done=lambda method: progress.update(1)
        )
        reference = results[0].sequences.cpu()
        for method, result in zip(methods, results, strict=True):
            same = torch.equal(result.sequences.cpu(), reference)
            method.add(result.seconds, None, result.stats, same)
        for method in methods:
            if id(method) in overhead:  # a separate, instrumented run: time outside forward passes
                overhead[id(method)].append(
                    _overhead_share(method, input_ids, small, large, device)
                )
    rows = summaries(methods)
    for method, row in zip(methods, rows, strict=True):
        if id(method) in overhead:
            row["overhead_share"] = statistics.mean(overhead[id(method)])
    batches = [
        _measure_batches(config, size, small, large, methods, device, progress)
        for size in config.batch_sizes
        if size > 1
    ]
    return {"eps": eps, "agreement": level_agreement, "methods": rows, "batches": batches}


# the methods with a batch row (sampled: each row with its own seed, `Sampler.for_row`)
BATCHED_SAMPLED = ("large sample", "spec. sample", "bild sample")  # with --sampling
BATCHED = ("large", "bild exact", "speculative", "bild", *BATCHED_SAMPLED)
SHARED = ("bild exact", "bild")  # ... and again with shared checks (rows kept in step)


def _shared_checks(method: Method, small, large, n: int) -> Method:
    """A BiLD method at the same setting, checking every row with drafts together."""
    setting = method.setting
    return _ours(
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


def _padded(inputs: list[torch.Tensor], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of different lengths as one batch and its mask (decoder-only: left-padded)."""
    width = max(ids.shape[1] for ids in inputs)
    batch = torch.full((len(inputs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for row, ids in enumerate(inputs):
        span = slice(width - ids.shape[1], width) if left else slice(0, ids.shape[1])
        batch[row, span], mask[row, span] = ids[0], 1
    return batch, mask


def _strip(row: list[int], pad: int) -> list[int]:
    while row and row[-1] == pad:
        row = row[:-1]
    return row


def _measure_batches(config, size: int, small, large, methods, device, progress) -> dict:
    """Throughput rows: padded batches of `size` inputs, each method at its batch-1 setting."""
    count = max(1, config.examples // size)
    inputs = random_inputs(
        count * size,
        vocab_size=small.config.vocab_size,
        min_length=8,
        max_length=32,
        seed=config.seed + 11 + size,
    )
    decoder_only = not large.config.is_encoder_decoder
    pad = pad_token_id(large)
    batches = [
        tuple(t.to(device) for t in _padded(inputs[i : i + size], pad, left=decoder_only))
        for i in range(0, count * size, size)
    ]
    batch_methods = [
        Method(m.name, m.setting, m.generate, stats=None if m.stats is None else BiLDStats())
        for m in methods
        if m.name in BATCHED
    ]
    batch_methods += [
        _shared_checks(m, small, large, config.max_new_tokens) for m in methods if m.name in SHARED
    ]
    warm_up(batch_methods, *batches[0])
    eos_ids = eos_token_ids(large)
    for input_ids, mask in batches:
        prefix = input_ids.shape[1] if decoder_only else 1
        results = run_example(
            batch_methods, input_ids, mask, device, on_done=lambda method: progress.update(1)
        )
        reference = [_strip(row, pad) for row in results[0].sequences.tolist()]
        for method, result in zip(batch_methods, results, strict=True):
            rows = [_strip(row, pad) for row in result.sequences.tolist()]
            same = sum(a == b for a, b in zip(rows, reference, strict=True))
            tokens = new_tokens(result.sequences, eos_ids, prefix)
            method.add_batch(result.seconds, [None] * size, result.stats, same, tokens)
    return {"batch_size": size, "batches": count, "methods": summaries(batch_methods)}


def _overhead_share(method: Method, input_ids, small, large, device) -> float:
    """The share of a call's wall time spent outside the models' forward passes."""
    modules = [small, large, small.get_encoder(), large.get_encoder()]
    with ForwardClock(modules, device) as clock:
        wall, _ = timed(lambda: method.generate(input_ids, None), device)
    return max(0.0, wall - clock.seconds) / wall


def _check_replaceable(output: Path) -> None:
    """An existing --output must hold bench results (the user's own files are never replaced)."""
    if output.is_file() and not holds_json_keys(output, {"config", "levels"}):
        raise UserError(
            f"--output {output} exists and holds something other than bild-align bench "
            "results; choose another --output, or move that file away"
        )


def run_benchmark(config: BenchConfig) -> dict:
    if config.preset not in PRESETS:
        raise ValueError(f"unknown preset {config.preset!r}; choose one of {sorted(PRESETS)}")
    check(config)
    device = resolve_device(config.device)
    shape = PRESETS[config.preset]
    model_type = "llama" if shape.get("decoder_only") else shape.get("family", "t5")
    check_dtype(model_type, config.dtype)
    if config.output:
        check_output_file(config.output)
        _check_replaceable(Path(config.output).expanduser())
    dtype = getattr(torch, config.dtype)
    per_input = 9 if config.sampling else 6
    unsampled = 0 if config.sampling else len(BATCHED_SAMPLED)
    batch_rows = len(BATCHED) - unsampled + len(SHARED)
    batches = sum(max(1, config.examples // b) for b in config.batch_sizes if b > 1)
    results = {
        "config": {**asdict(config), "preset_shape": PRESETS[config.preset]},
        "environment": environment(device),
        "levels": [],
    }
    with (
        torch.inference_mode(),
        tqdm(
            total=len(config.eps) * (config.examples * per_input + batch_rows * batches),
            desc="bench",
            unit="run",
        ) as progress,
    ):
        for eps in config.eps:
            try:
                level = _measure_level(config, eps, device, dtype, progress)
            except KeyboardInterrupt:
                kept = len(results["levels"])
                where = f" in {config.output}" if config.output and kept else ""
                print(
                    f"\ninterrupted: {kept} of {len(config.eps)} agreement levels are kept{where}",
                    file=sys.stderr,
                )
                raise
            results["levels"].append(level)
            if config.output:  # each finished level is kept, whatever happens next
                write_json_atomic(config.output, results)
    return results


_SHORT_NAMES = {
    "num_assistant_tokens_schedule": "schedule",
    "num_assistant_tokens": "k",
    "max_small_steps": "steps",
}


def _short_setting(setting: dict) -> str:
    return " ".join(
        f"{_SHORT_NAMES.get(key, key)}={value}"
        for key, value in setting.items()
        if key != "tuned_over"
    )


def format_table(results: dict) -> str:
    lines = []
    config = results["config"]
    lines.append(
        f"preset {config['preset']} {config['preset_shape']} | {config['examples']} inputs x "
        f"{config['max_new_tokens']} new tokens | {results['environment']['device']}, "
        f"{config['dtype']}, torch {results['environment']['torch']}, transformers "
        f"{results['environment']['transformers']}"
    )
    rows = [row for level in results["levels"] for row in level["methods"]]
    name_width = max([len("method")] + [len(row["method"]) for row in rows]) + 2
    setting_width = max([len("setting")] + [len(_short_setting(row["setting"])) for row in rows])
    setting_width += 2
    header = (
        f"{'method':<{name_width}}{'setting':<{setting_width}}{'median ms':>10}{'speedup':>9}"
        f"{'same':>6}{'L calls/tok':>12}{'small share':>12}{'overhead':>9}"
    )
    for level in results["levels"]:
        lines.append("")
        lines.append(f"eps={level['eps']}  agreement={level['agreement']:.3f}")
        lines.append(header)
        for row in level["methods"]:
            setting = _short_setting(row["setting"])
            stats = row.get("stats")
            same = f"{row['identical_to_large']}/{row['latency']['count']}"
            lines.append(
                f"{row['method']:<{name_width}}{setting:<{setting_width}}"
                f"{row['latency']['median_s'] * 1000:>10.1f}"
                f"{row['speedup']:>8.2f}x{same:>6}"
                + (
                    f"{stats['large_calls_per_token']:>12.3f}{stats['small_token_share']:>12.2f}"
                    f"{row['overhead_share'] * 100:>8.1f}%"
                    if stats
                    else ""
                )
            )
        for batch in level.get("batches", []):
            lines.append(
                f"  batch {batch['batch_size']} ({batch['batches']} batches): "
                + ", ".join(
                    f"{row['method']} {row.get('tokens_per_s', 0):.0f} tok/s "
                    f"{row['speedup']:.2f}x same {row['identical_to_large']}"
                    for row in batch["methods"]
                )
            )
    return "\n".join(lines)
