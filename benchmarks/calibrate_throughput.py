"""Calibration throughput: batched, length-sorted greedy decoding vs a loop calling `generate`
one example at a time, on the same model and inputs, with the outputs compared row for row.

    .venv/bin/python benchmarks/calibrate_throughput.py [--model data/demo/large]
        [--task gettext-de-en] [--rows 256] [--batch-size 64] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from bild_align.data.tasks import get_task, load_rows
from bild_align.models.batched_generate import chunked, greedy_texts, length_sorted, token_lengths
from bild_align.models.loading import load_seq2seq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="data/demo/large")
    parser.add_argument("--task", default="gettext-de-en")
    parser.add_argument("--split", default="train")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    task = get_task(args.task)
    sources = list(load_rows(task, args.split, args.rows)["source"])
    model, tokenizer, _ = load_seq2seq(args.model, device="cpu")
    limit = task.max_source_length
    greedy_texts(model, tokenizer, sources[:2], limit, args.max_new_tokens)  # warm-up

    start = time.perf_counter()
    looped = [greedy_texts(model, tokenizer, [s], limit, args.max_new_tokens)[0] for s in sources]
    loop_seconds = time.perf_counter() - start

    start = time.perf_counter()
    batched = [""] * len(sources)
    order = length_sorted(token_lengths(tokenizer, sources, limit))
    for batch in chunked(order, args.batch_size):
        texts = greedy_texts(
            model, tokenizer, [sources[i] for i in batch], limit, args.max_new_tokens
        )
        for index, text in zip(batch, texts, strict=True):
            batched[index] = text
    batch_seconds = time.perf_counter() - start

    print(
        json.dumps(
            {
                "model": args.model,
                "task": args.task,
                "rows": len(sources),
                "batch_size": args.batch_size,
                "max_new_tokens": args.max_new_tokens,
                "loop_rows_per_s": len(sources) / loop_seconds,
                "batched_rows_per_s": len(sources) / batch_seconds,
                "speedup": loop_seconds / batch_seconds,
                "identical_rows": sum(a == b for a, b in zip(looped, batched, strict=True)),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "machine": platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
