"""Batch-1 BiLD and large-model time of two checkouts' decoders in one process, interleaved per
sentence, so that machine drift (other tenants, clock changes) hits both alike.

    git archive 9b96437 src | tar -x -C /tmp/before
    python benchmarks/checkouts_interleaved.py /tmp/before/src src --rows 100 [--device cuda]

Each checkout's `bild_align` modules are imported under their own name and swapped into
`sys.modules` before each of its calls (its lazy imports then find its own modules). Per
sentence, the order of the two checkouts alternates (AB, BA, ...). Prints one JSON object: per
checkout and method the total seconds and tokens, and the ratios second / first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


def import_checkout(src: str) -> dict:
    """The `bild_align` modules of the checkout at `src`, imported apart from any other."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    for name in [n for n in sys.modules if n == "bild_align" or n.startswith("bild_align.")]:
        del sys.modules[name]
    sys.path.insert(0, src)
    try:
        import bild_align  # noqa: F401  (the checkout's package, and what it imports)
        import bild_align.core.decoding  # noqa: F401

        try:
            import bild_align.data.gettext_corpus  # noqa: F401
        except ImportError:  # a checkout from before the tree by feature
            import bild_align.gettext_corpus  # noqa: F401
    finally:
        sys.path.remove(src)
    return {
        n: m for n, m in sys.modules.items() if n == "bild_align" or n.startswith("bild_align.")
    }


def use(modules: dict) -> None:
    for name in [n for n in sys.modules if n == "bild_align" or n.startswith("bild_align.")]:
        del sys.modules[name]
    sys.modules.update(modules)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="the first checkout's src folder (e.g. before a change)")
    parser.add_argument("second", help="the second checkout's src folder")
    parser.add_argument("--rows", type=int, default=100, help="test sentences")
    parser.add_argument("--rb", type=float, default=6.0, help="rollback threshold")
    parser.add_argument("--fb", type=float, default=0.3, help="fallback threshold")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--dtype", default="float32", help="model dtype, e.g. bfloat16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.first, args.second = (str(Path(src).resolve()) for src in (args.first, args.second))
    checkouts = {src: import_checkout(src) for src in (args.first, args.second)}
    modules = checkouts[args.second]
    corpus = modules.get("bild_align.data.gettext_corpus") or modules["bild_align.gettext_corpus"]
    use(modules)
    load_split = corpus.load_split
    tokenizer = AutoTokenizer.from_pretrained(DEMO / "large")
    dtype = getattr(torch, args.dtype)
    small = AutoModelForSeq2SeqLM.from_pretrained(DEMO / "small", dtype=dtype).to(device).eval()
    large = AutoModelForSeq2SeqLM.from_pretrained(DEMO / "large", dtype=dtype).to(device).eval()
    rows = load_split("test")[: args.rows]
    inputs = [tokenizer(row["de"], return_tensors="pt").input_ids.to(device) for row in rows]

    def methods(src: str) -> dict:
        package = checkouts[src]["bild_align"]
        return {
            "bild": lambda ids: package.bild_generate(
                small,
                large,
                ids,
                fallback_threshold=args.fb,
                rollback_threshold=args.rb,
                max_new_tokens=64,
            ),  # fmt: skip
            "large": lambda ids: package.autoregressive_generate(large, ids, max_new_tokens=64),
        }

    runs = {src: methods(src) for src in checkouts}
    totals = {src: {name: [0.0, 0] for name in ("bild", "large")} for src in checkouts}

    def timed(src: str, name: str, ids) -> None:
        use(checkouts[src])
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = runs[src][name](ids)
        if device.type == "cuda":
            torch.cuda.synchronize()
        totals[src][name][0] += time.perf_counter() - start
        totals[src][name][1] += out.stats.generated

    for src in checkouts:  # warm-up
        for name in ("bild", "large"):
            for ids in inputs[:3]:
                timed(src, name, ids)
    totals = {src: {name: [0.0, 0] for name in ("bild", "large")} for src in checkouts}
    order = [args.first, args.second]
    for index, ids in enumerate(inputs):
        for src in order if index % 2 == 0 else order[::-1]:
            for name in ("bild", "large"):
                timed(src, name, ids)
    first, second = totals[args.first], totals[args.second]
    print(
        json.dumps(
            {
                "checkouts": {src: checkouts[src]["bild_align"].__file__ for src in checkouts},
                "device": args.device,
                "threads": args.threads,
                "dtype": args.dtype,
                "rows": len(inputs),
                "setting": {"rb": args.rb, "fb": args.fb, "max_new_tokens": 64},
                "seconds": {
                    src: {k: round(v[0], 3) for k, v in totals[src].items()} for src in totals
                },
                "tokens": {src: {k: v[1] for k, v in totals[src].items()} for src in totals},
                "second_over_first": {k: round(second[k][0] / first[k][0], 3) for k in first},
            }
        )
    )


if __name__ == "__main__":
    main()
