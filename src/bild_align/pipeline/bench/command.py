"""Decoder micro-benchmark: BiLD beside large-only, small-only and transformers' assisted
generation, on the same inputs, in one run, at several levels of small/large agreement.

    bild-align bench --preset t5 --examples 8 --max-new-tokens 48 --eps 0,0.01,0.02

    config = BenchConfig(preset="tiny", examples=2)
    results = run_benchmark(config)        # dict, also written to config.output as JSON

Pairs come from `bild_align.models.toy`: the large model is the small one plus near-identity
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

import statistics
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bild_align.configs import BenchConfig, check
from bild_align.core.decoding import (
    BiLDStats,
    eos_token_ids,
    pad_token_id,
)
from bild_align.errors import UserError
from bild_align.measure.harness import Method, new_tokens, run_example, summaries, warm_up
from bild_align.measure.timing import ForwardClock, environment, timed
from bild_align.models.loading import check_dtype, resolve_device
from bild_align.models.toy import agreement, random_inputs
from bild_align.pipeline.bench.methods import (
    BATCHED,
    BATCHED_SAMPLED,
    PRESETS,
    SHARED,
    bench_methods,
    build_pair,
    padded,
    shared_checks,
    strip_padding,
)
from bild_align.reporting import report
from bild_align.runs.files import check_output_file, holds_json_keys, write_json_atomic


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
    methods = bench_methods(
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
        tuple(t.to(device) for t in padded(inputs[i : i + size], pad, left=decoder_only))
        for i in range(0, count * size, size)
    ]
    batch_methods = [
        Method(m.name, m.setting, m.generate, stats=None if m.stats is None else BiLDStats())
        for m in methods
        if m.name in BATCHED
    ]
    batch_methods += [
        shared_checks(m, small, large, config.max_new_tokens) for m in methods if m.name in SHARED
    ]
    warm_up(batch_methods, *batches[0])
    eos_ids = eos_token_ids(large)
    for input_ids, mask in batches:
        prefix = input_ids.shape[1] if decoder_only else 1
        results = run_example(
            batch_methods, input_ids, mask, device, on_done=lambda method: progress.update(1)
        )
        reference = [strip_padding(row, pad) for row in results[0].sequences.tolist()]
        for method, result in zip(batch_methods, results, strict=True):
            rows = [strip_padding(row, pad) for row in result.sequences.tolist()]
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
                report(
                    f"\ninterrupted: {kept} of {len(config.eps)} agreement levels are kept{where}",
                    stderr=True,
                )
                raise
            results["levels"].append(level)
            if config.output:  # each finished level is kept, whatever happens next
                write_json_atomic(config.output, results)
    return results
