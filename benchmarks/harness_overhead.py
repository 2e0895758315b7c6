"""Overhead of the eval timing harness: large-model greedy decoding of the same inputs timed
per example through `bild_align.measure.timing.timed` (as `bild-align eval` does) and as one
bare loop.

    .venv/bin/python benchmarks/harness_overhead.py [--model data/demo/large] [--rows 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bild_align.data.tasks import get_task, load_rows
from bild_align.measure.timing import timed
from bild_align.models.loading import load_seq2seq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="data/demo/large")
    parser.add_argument("--task", default="gettext-de-en")
    parser.add_argument("--split", default="test")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()

    model, tokenizer, _ = load_seq2seq(args.model, device="auto")
    inputs = [
        tokenizer(source, return_tensors="pt").to(model.device)
        for source in load_rows(get_task(args.task), args.split, args.rows)["source"]
    ]

    def generate(batch):
        return model.generate(**batch, do_sample=False, max_new_tokens=args.max_new_tokens)

    def through_harness() -> float:
        return sum(timed(lambda b=b: generate(b), model.device)[0] for b in inputs)

    def bare_loop() -> float:
        start = time.perf_counter()
        for batch in inputs:
            generate(batch)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    harness, bare = [], []
    with torch.inference_mode():
        bare_loop()  # warm-up
        for repeat in range(args.repeats):  # alternate the order, so drift hits both alike
            if repeat % 2:
                harness.append(through_harness())
                bare.append(bare_loop())
            else:
                bare.append(bare_loop())
                harness.append(through_harness())
    print(
        json.dumps(
            {
                "model": args.model,
                "rows": len(inputs),
                "repeats": args.repeats,
                "harness_s": min(harness),
                "bare_loop_s": min(bare),
                "harness_median_s": statistics.median(harness),
                "bare_loop_median_s": statistics.median(bare),
                "difference_percent": 100 * (min(harness) - min(bare)) / min(bare),
                "device": str(model.device),
                "threads": torch.get_num_threads(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
