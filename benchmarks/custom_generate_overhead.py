"""What running BiLD through `generate(custom_generate=...)` costs over calling `bild_generate`
directly, at batch 1 on the demo pair (unaligned small model unless --small is given).

    .venv/bin/python benchmarks/custom_generate_overhead.py --rows 100

Per sentence, interleaved: `bild_generate`, `large.generate(custom_generate=generate_bild)`
(the callable: transformers first runs the large model's encoder and builds a cache that BiLD
does not use), `large.generate(custom_generate=CUSTOM_GENERATE, trust_remote_code=True)` (the
folder, as from the Hub) and plain greedy `large.generate`. Prints one JSON object: the
configuration, the machine, the seconds of each and the ratios to `bild_generate`; the tokens
of the three BiLD routes are checked to be identical.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import bild_align
from bild_align import bild_generate
from bild_align.data.gettext_corpus import load_split
from bild_align.measure.timing import environment
from bild_align.resources import DEMO_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100, help="test sentences")
    parser.add_argument("--small", default=str(DEMO_DIR / "small"), help="small model folder")
    parser.add_argument("--rb", type=float, default=2.0, help="rollback threshold")
    parser.add_argument("--fb", type=float, default=0.6, help="fallback threshold")
    args = parser.parse_args()
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(DEMO_DIR / "large")
    small = AutoModelForSeq2SeqLM.from_pretrained(args.small, dtype=torch.float32).eval()
    large = AutoModelForSeq2SeqLM.from_pretrained(DEMO_DIR / "large", dtype=torch.float32).eval()
    settings = {"rollback_threshold": args.rb, "fallback_threshold": args.fb, "max_new_tokens": 64}
    routes = {
        "bild_generate": lambda ids: bild_generate(small, large, ids, **settings).sequences,
        "generate_callable": lambda ids: large.generate(
            ids, assistant_model=small, custom_generate=bild_align.generate_bild, **settings
        ),
        "generate_folder": lambda ids: large.generate(
            ids,
            assistant_model=small,
            custom_generate=bild_align.CUSTOM_GENERATE,
            trust_remote_code=True,
            **settings,
        ),  # fmt: skip
        "large_generate": lambda ids: large.generate(ids, max_new_tokens=64, do_sample=False),
    }
    inputs = [tokenizer(row["de"], return_tensors="pt").input_ids for row in load_split("test")]
    for route in routes.values():  # warm-up, and the folder route's one-time module load
        route(inputs[0])
    seconds = dict.fromkeys(routes, 0.0)
    for ids in inputs[: args.rows]:
        outputs = {}
        for name, route in routes.items():
            start = time.perf_counter()
            outputs[name] = route(ids)
            seconds[name] += time.perf_counter() - start
        bild = outputs["bild_generate"]
        assert torch.equal(outputs["generate_callable"], bild)
        assert torch.equal(outputs["generate_folder"], bild)
    ratios = {name: seconds[name] / seconds["bild_generate"] for name in routes}
    config = {"rows": args.rows, "small": args.small, "rb": args.rb, "fb": args.fb, "batch": 1}
    print(json.dumps({"config": config, "machine": environment(torch.device("cpu")),
                      "seconds": seconds, "ratio_to_bild_generate": ratios}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
