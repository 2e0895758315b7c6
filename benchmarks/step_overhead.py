"""What one cached single-token decoder step costs, against its bare matrix products.

    .venv/bin/python benchmarks/step_overhead.py [--pairs demo,t5,bart,llama] [--steps 40]

For each model: the step through transformers' forward with a `DynamicCache` (the
`engine="transformers"` path), the step of our lean decoder over its static cache (the
default engine), and the decoder's matrix products alone (attention projections, feed-forward,
output layer: what no implementation can skip). Steps are fed at positions 0 .. STEPS-1 after
a 25-token input (encoder-decoder) or prompt (decoder-only, fed first); the best of five
repetitions is reported, all in one run. `demo` is the shipped pair (data/demo); `t5` is
T5-small / T5-large-shaped (6 vs 24 layers, d_model 512, 32k vocabulary; random weights, the
large one as wide as the small); `bart` is a distilbart / BART-base shape (1 vs 6
decoder layers, d_model 768, 50k vocabulary; random weights); `llama` is `bild-align bench
--preset llama`'s shape (4 vs 16 Llama layers, width 512, 32k vocabulary).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from transformers import AutoModelForSeq2SeqLM

from bild_align.core.engines.hf_forward import DecoderState
from bild_align.core.engines.lean import lean_decoder
from bild_align.models.toy import random_bart, random_llama, random_t5

PROMPT = 25


def _models(pair: str):
    if pair == "demo":
        return {
            role: AutoModelForSeq2SeqLM.from_pretrained(f"data/demo/{role}", dtype=torch.float32)
            for role in ("small", "large")
        }
    if pair == "llama":
        shape = dict(vocab_size=32000, hidden_size=512, num_heads=8)
        return {
            "small": random_llama(num_layers=4, seed=0, **shape),
            "large": random_llama(num_layers=16, seed=1, **shape),
        }
    if pair == "bart":
        shape = dict(vocab_size=50265, d_model=768, num_heads=12, ffn_dim=3072)
        return {
            "small": random_bart("bart", num_layers=1, seed=0, **shape),
            "large": random_bart("bart", num_layers=6, seed=1, **shape),
        }
    shape = dict(vocab_size=32128, d_model=512, num_heads=8, d_ff=2048)
    return {
        "small": random_t5(num_layers=6, seed=0, **shape),
        "large": random_t5(num_layers=24, seed=1, **shape),
    }


def _best(run, repetitions: int = 5) -> float:
    run()  # warm-up
    return min(run() for _ in range(repetitions))


def _per_step(feed, steps: int, first: int) -> float:
    token = torch.zeros((1, 1), dtype=torch.long)
    start = time.perf_counter()
    for position in range(first, first + steps):
        feed(token, position)
    return (time.perf_counter() - start) / steps


def _step_weights(decoder) -> list[torch.Tensor]:
    """The matrices one single-token step multiplies by (cross-attention keys and values
    are computed once per input, not per step)."""
    if hasattr(decoder.layers[0], "fc1"):  # BART family
        return [
            pair[0]
            for layer in decoder.layers
            for pair in (layer.q, layer.k, layer.v, layer.o, layer.cross_q, layer.cross_o)
            + (layer.fc1, layer.fc2)
        ]
    if hasattr(decoder.layers[0], "cross_q"):  # T5
        return [
            w
            for layer in decoder.layers
            for w in (layer.q, layer.k, layer.v, layer.o, layer.cross_q, layer.cross_o, layer.wi)
            + ((layer.wi_gate,) if layer.gated else ())
            + (layer.wo,)
        ]
    return [
        pair[0]
        for layer in decoder.layers
        for pair in (layer.q, layer.k, layer.v, layer.o, layer.gate, layer.up, layer.down)
    ]


def measure(model, steps: int, device) -> dict:
    model = model.to(device).eval()
    source = torch.randint(2, model.config.vocab_size, (1, PROMPT), device=device)
    decoder_only = not model.config.is_encoder_decoder
    first = PROMPT if decoder_only else 0  # a decoder-only model's prompt is in its cache

    def transformers_step():
        state = DecoderState(model, source, None)  # no capacity: transformers' forward
        if decoder_only:
            state.feed(source)
        return _per_step(lambda token, _: state.feed(token), steps, first)

    def lean_step():
        decoder = lean_decoder(model, source, None, capacity=first + steps)
        if decoder_only:
            decoder.step(source, 0)
        return _per_step(decoder.step, steps, first)

    decoder = lean_decoder(model, source, None, capacity=first + steps)
    weights = _step_weights(decoder)
    width = decoder.embed.shape[1]
    hidden = torch.randn((1, 1, width), device=device)
    inner = torch.randn((1, 1, max(w.shape[1] for w in weights)), device=device)

    def products():
        start = time.perf_counter()
        for _ in range(steps):
            for weight in weights:
                (inner if weight.shape[1] == inner.shape[-1] else hidden) @ weight.T
            hidden @ decoder.head.T
        return (time.perf_counter() - start) / steps

    with torch.inference_mode():
        figures = {
            "transformers_ms": _best(transformers_step) * 1e3,
            "lean_ms": _best(lean_step) * 1e3,
            "products_ms": _best(products) * 1e3,
        }
    figures["transformers_over_products"] = figures["transformers_ms"] / figures["products_ms"]
    figures["lean_over_products"] = figures["lean_ms"] / figures["products_ms"]
    figures["lean_speedup"] = figures["transformers_ms"] / figures["lean_ms"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pairs", default="demo,t5,bart,llama", help="comma-separated: demo, t5, bart, llama"
    )
    parser.add_argument("--steps", type=int, default=40, help="decoder steps per repetition")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)
    results = {
        "config": vars(args),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    print(f"{'model':<12}{'transformers ms':>16}{'lean ms':>9}{'products ms':>12}"
          f"{'tf/prod':>9}{'lean/prod':>10}{'lean gain':>10}")  # fmt: skip
    for pair in args.pairs.split(","):
        for role, model in _models(pair).items():
            figures = measure(model, args.steps, device)
            results[f"{pair} {role}"] = figures
            print(
                f"{pair + ' ' + role:<12}{figures['transformers_ms']:>16.3f}"
                f"{figures['lean_ms']:>9.3f}{figures['products_ms']:>12.3f}"
                f"{figures['transformers_over_products']:>9.2f}"
                f"{figures['lean_over_products']:>10.2f}{figures['lean_speedup']:>9.2f}x"
            )
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
