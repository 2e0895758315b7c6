"""One decoder step's cost of drafters made from an mT5-shaped large model (built in code,
random weights, 250,112-token vocabulary), with the whole output layer and with K tokens, as
fractions of the large model's step, all measured in one run.

    taskset -c 0 .venv/bin/python benchmarks/drafter_step_cost.py --shape mt5-large \
        --threads 1 --vocab-sizes 4000,8000,16000,32000 --layers 1,2

Prints one JSON object: the configuration, the environment, and per model the median seconds
of a lean single-token step at batch 1 (or --batch) over --steps steps after a warm-up
(repeated --repeats times, alternating the models; the median of the repeats), and its
fraction of the large model's. The encoder is not timed: a drafter shares the large one's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import MT5Config, MT5ForConditionalGeneration

from bild_align.core.engines.lean import lean_decoder
from bild_align.core.engines.output_layer import ReducedOutputLayer
from bild_align.measure.timing import environment
from bild_align.models.drafters import build_drafter

SHAPES = {  # the public checkpoints' configurations
    "mt5-small": dict(d_model=512, d_ff=1024, num_layers=8, num_heads=6, d_kv=64),
    "mt5-base": dict(d_model=768, d_ff=2048, num_layers=12, num_heads=12, d_kv=64),
    "mt5-large": dict(d_model=1024, d_ff=2816, num_layers=24, num_heads=16, d_kv=64),
}
VOCAB = 250112


def random_mt5(shape: str, device: torch.device, dtype: torch.dtype):
    config = MT5Config(
        vocab_size=VOCAB, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **SHAPES[shape],
    )  # fmt: skip
    with torch.device("meta"):  # no slow initialisation of a billion weights
        model = MT5ForConditionalGeneration(config)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.05, generator=generator)
    return model.to(dtype).eval()


def step_seconds(model, source: torch.Tensor, steps: int) -> float:
    decoder = lean_decoder(model, source, None, capacity=steps + 1)
    token = torch.zeros((source.shape[0], 1), dtype=torch.long, device=source.device)
    synchronize = torch.cuda.synchronize if source.device.type == "cuda" else (lambda: None)
    for position in range(3):  # warm-up
        decoder.step(token, position)
    decoder = lean_decoder(model, source, None, capacity=steps + 1)
    synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        for position in range(steps):
            decoder.step(token, position)
    synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mt5-large")
    parser.add_argument("--layers", default="1", help="drafter decoder layers, comma-separated")
    parser.add_argument("--vocab-sizes", default="4000,8000,16000,32000")
    parser.add_argument("--steps", type=int, default=32, help="steps timed per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--source-length", type=int, default=24)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    large = random_mt5(args.shape, device, dtype)
    models = {"large": (large, large.lm_head)}
    for layers in (int(text) for text in args.layers.split(",")):
        drafter, _ = build_drafter(large, layers)
        drafter.encoder = large.encoder  # shared, as `load_pair` ties it (one copy in memory)
        drafter = drafter.to(device)
        whole = drafter.lm_head
        models[f"drafter {layers} layer(s), whole vocabulary"] = (drafter, whole)
        for size in (int(text) for text in args.vocab_sizes.split(",")):
            kept = torch.arange(size)  # which ids does not change the cost
            reduced = ReducedOutputLayer(whole.weight, kept, VOCAB)
            models[f"drafter {layers} layer(s), {size} tokens"] = (drafter, reduced)
    generator = torch.Generator().manual_seed(1)
    source = torch.randint(2, VOCAB, (args.batch, args.source_length), generator=generator)
    source = source.to(device)
    seconds: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(args.repeats):  # alternating: drift hits every model alike
            for name, (model, output_layer) in models.items():
                model.set_output_embeddings(output_layer)
                seconds[name].append(step_seconds(model, source, args.steps))
    large_step = statistics.median(seconds["large"])
    print(json.dumps({
        "config": vars(args),
        "environment": environment(device),
        "steps": {
            name: {
                "median_s": statistics.median(times),
                "spread_s": [min(times), max(times)],
                "of_large": statistics.median(times) / large_step,
            }
            for name, times in seconds.items()
        },
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
