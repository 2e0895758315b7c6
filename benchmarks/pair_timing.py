"""Batch-1 time of the demo's large model (its `generate`, and alone on our engine) and of BiLD
with each given small model or drafter, on the first N test sentences of gettext-de-en, on
any device: the methods take turns on each sentence, so drift hits all alike.

    .venv/bin/python benchmarks/pair_timing.py --small outputs/demo/aligned \
        --small outputs/demo/aligned-drafter-1 --setting 0,0.4,3 --setting 2,0.4,3 \
        --rows 200 --device cuda

Prints one JSON object: the configuration, the environment and per method the total seconds,
the tokens made, the speedup over the large model's `generate` and over our engine, large
calls per token and how many outputs equal the large model's greedy ones. A drafter of the
large model is paired as every command pairs it (`prepare_drafter`: one encoder pass).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from bild_align import autoregressive_generate, bild_generate
from bild_align.data.gettext_corpus import load_split
from bild_align.measure.timing import environment
from bild_align.models.drafters import prepare_drafter
from bild_align.models.loading import model_revision
from bild_align.resources import DEMO_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="append", required=True, help="a small model folder")
    parser.add_argument(
        "--setting", action="append", default=None, help="rb,fb,max_small_steps (repeatable)"
    )
    parser.add_argument("--rows", type=int, default=200, help="test sentences")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    settings = [tuple(float(x) for x in text.split(",")) for text in args.setting or ["0,0.4,3"]]
    large_dir = str(DEMO_DIR / "large")
    tokenizer = AutoTokenizer.from_pretrained(large_dir)
    large = AutoModelForSeq2SeqLM.from_pretrained(large_dir, dtype=torch.float32)
    large = large.to(device).eval()
    revision = model_revision(large, large_dir)
    rows = load_split("test")[: args.rows]
    inputs = [tokenizer(row["de"], return_tensors="pt").input_ids.to(device) for row in rows]
    methods = {
        "large generate": lambda ids: (large.generate(ids, max_new_tokens=64), None),
        "large engine": lambda ids: _out(autoregressive_generate(large, ids, max_new_tokens=64)),
    }  # fmt: skip
    shares = {}
    for folder in args.small:
        small = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.float32)
        small = small.to(device).eval()
        shares[folder] = prepare_drafter(small, large, folder, revision)
        for rb, fb, steps in settings:
            methods[f"bild {folder} rb={rb:g} fb={fb:g} steps={int(steps)}"] = (
                lambda ids, small=small, rb=rb, fb=fb, steps=int(steps): _out(
                    bild_generate(
                        small,
                        large,
                        ids,
                        rollback_threshold=rb,
                        fallback_threshold=fb,
                        max_small_steps=steps,
                        max_new_tokens=64,
                    )  # fmt: skip
                )
            )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    totals = {name: {"seconds": 0.0, "tokens": 0, "calls": 0, "same": 0} for name in methods}
    with torch.inference_mode():
        for ids in inputs[:3]:  # warm-up
            for method in methods.values():
                method(ids)
        for ids in inputs:
            reference = None
            for name, method in methods.items():
                sync()
                start = time.perf_counter()
                sequences, stats = method(ids)
                sync()
                total = totals[name]
                total["seconds"] += time.perf_counter() - start
                new = sequences[0, 1:].tolist()
                reference = new if reference is None else reference
                total["same"] += new == reference
                if stats is not None:
                    total["tokens"] += stats.generated
                    total["calls"] += stats.large_calls
    base, engine = totals["large generate"]["seconds"], totals["large engine"]["seconds"]
    for total in totals.values():
        total["speedup"] = base / total["seconds"]
        total["speedup_over_engine"] = engine / total["seconds"]
        total["large_calls_per_token"] = (
            total["calls"] / total["tokens"] if total["tokens"] else None
        )
    print(json.dumps({
        "config": vars(args), "environment": environment(device), "drafters": shares,
        "methods": totals,
    }, indent=1))  # fmt: skip


def _out(output):
    return output.sequences, output.stats


if __name__ == "__main__":
    main()
