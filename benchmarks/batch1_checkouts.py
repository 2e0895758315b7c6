"""Batch-1 BiLD and large-model time of one checkout's decoder on the demo pair, to compare
two checkouts (before / after a change) in alternating runs on an idle machine.

    git worktree add /tmp/old HEAD~1
    for i in 1 2 3; do for src in /tmp/old/src src; do
        PYTHONPATH=$src taskset -c 0 .venv/bin/python benchmarks/batch1_checkouts.py \
            --rows 100 --threads 1; done; done

Each run prints one JSON line: the checkout, the seconds BiLD (rb=6 fb=0.3 by default) and the
large model alone took over the first N test sentences of gettext-de-en, and the tokens made
(equal between checkouts when a change keeps the outputs).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import bild_align
from bild_align import autoregressive_generate, bild_generate
from bild_align.resources import DEMO_DIR

try:
    from bild_align.data.gettext_corpus import load_split
except ImportError:  # a checkout from before the tree by feature
    from bild_align.gettext_corpus import load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100, help="test sentences")
    parser.add_argument("--small", default=str(DEMO_DIR / "small"), help="small model folder")
    parser.add_argument("--large", default=str(DEMO_DIR / "large"), help="large model folder")
    parser.add_argument("--rb", type=float, default=6.0, help="rollback threshold")
    parser.add_argument("--fb", type=float, default=0.3, help="fallback threshold")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1: steadier)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.large)
    small = AutoModelForSeq2SeqLM.from_pretrained(args.small, dtype=torch.float32).to(device)
    large = AutoModelForSeq2SeqLM.from_pretrained(args.large, dtype=torch.float32)
    small, large = small.eval(), large.to(device).eval()
    rows = load_split("test")[: args.rows]
    inputs = [tokenizer(row["de"], return_tensors="pt").input_ids.to(device) for row in rows]

    def bild(ids):
        return bild_generate(
            small, large, ids, fallback_threshold=args.fb, rollback_threshold=args.rb,
            max_new_tokens=64,
        )  # fmt: skip

    def alone(ids):
        return autoregressive_generate(large, ids, max_new_tokens=64)

    def run(method) -> tuple[float, int]:
        synchronize()
        start, tokens = time.perf_counter(), 0
        for ids in inputs:
            tokens += method(ids).stats.generated
        synchronize()
        return time.perf_counter() - start, tokens

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for ids in inputs[:3]:  # warm-up
        bild(ids)
    bild_seconds, bild_tokens = run(bild)
    large_seconds, large_tokens = run(alone)
    print(
        json.dumps(
            {
                "checkout": bild_align.__file__,
                "device": args.device,
                "bild_s": round(bild_seconds, 3),
                "large_s": round(large_seconds, 3),
                "bild_tokens": bild_tokens,
                "large_tokens": large_tokens,
            }
        )
    )


if __name__ == "__main__":
    main()
