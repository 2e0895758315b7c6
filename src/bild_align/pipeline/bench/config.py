"""`bild-align bench`'s settings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bild_align.options import (
    number_list,
    option,
    positive_int,
    positive_int_list,
)
from bild_align.pipeline.base_config import (
    Config,
    _device,
    _dtype,
)


@dataclass
class BenchConfig(Config):
    """`bild-align bench`: the decoder micro-benchmark on pairs built in code."""

    preset: str = option(
        "t5",
        "model shapes: t5 (6 vs 24 layers, 32k vocab), mt5 (8 vs 24 "
        "layers, 250k vocab, gated), bart (BART-base width, 1 vs 6 decoder layers, 50k "
        "vocab), llama (decoder-only, 4 vs 16 layers, 32k vocab), tiny (smoke test)",
        choices=("t5", "mt5", "bart", "llama", "tiny"),
    )
    eps: tuple[float, ...] = option(
        (0.0, 0.01, 0.02),
        "comma-separated scales of the large "
        "model's extra layers, one agreement level each; 0 = full "
        "agreement",
        parse=number_list,
    )
    examples: int = option(8, "random inputs per level", parse=positive_int)
    max_new_tokens: int = option(48, "tokens generated per input", parse=positive_int)
    tune_examples: int = option(
        2, "inputs used to pick each tuned method's fastest setting", parse=positive_int
    )
    device: str = _device()
    dtype: str = _dtype()
    seed: int = option(0, "seed for models and inputs")
    output: str | None = option("results/bench_decoder.json", "where to write the JSON results")
    assistant_tokens: tuple[int, ...] = option(
        (4, 8, 16), "assisted generation's candidate draft lengths", command_line=False
    )
    exact_max_small_steps: tuple[int, ...] = option(
        (4, 8, 16, 32), "exact BiLD's candidate max_small_steps", command_line=False
    )
    exact_fallback_thresholds: tuple[float, ...] = option(
        (0.0, 0.3), "exact BiLD's candidate fallback thresholds", command_line=False
    )
    gammas: tuple[int, ...] = option(
        (2, 4, 8, 16), "speculative decoding's candidate draft lengths", command_line=False
    )
    sampling: bool = option(
        False, "add sampling rows (large model, speculative sampling and BiLD, temperature 1)"
    )
    batch_sizes: tuple[int, ...] = option(
        (1, 4, 8),
        "batch sizes; beyond 1, the large model's batched generate, exact BiLD, speculative "
        "decoding and BiLD (with --sampling, their sampled rows too) each decode that many "
        "inputs per call (throughput rows)",
        parse=positive_int_list,
    )

    def problems(self) -> Iterator[str]:
        if not self.eps or any(eps < 0 for eps in self.eps):
            yield ("--eps needs one or more numbers >= 0")
        if 1 not in self.batch_sizes:
            yield ("--batch-sizes must include 1 (the latency rows every level has)")
        larger = [size for size in self.batch_sizes if size > self.examples]
        if larger:
            yield (
                f"--batch-sizes {','.join(map(str, larger))}: a batch needs that many inputs, "
                f"but --examples is {self.examples}; raise --examples or lower the batch sizes"
            )
