"""Alignment objectives compared on the demo pair: the same calibration data and the same number
of optimizer steps for each, then held-out alignment measures and `bild-align eval` (test BLEU,
large-model calls per token, speedup at the demo setting and at the best sweep setting).

    .venv/bin/bild-align calibrate --split train --output outputs/demo/calibration
    .venv/bin/python benchmarks/compare_objectives.py [--steps 1000] [--only sequence,token-fkl]
        [--output-dir outputs/objectives]

Each run is `bild-align train --recipe recipes/demo-align.yaml` with the objective's keys, and
`bild-align eval --sweep` on the test split; finished runs are reused, so an interrupted
comparison continues. The table (and a JSON with every figure) goes to OUTPUT_DIR/summary.*.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bild_align.distill import MEASURES

BIN = Path(sys.executable).parent
# name -> recipe keys; `sequence` is the paper's (and today's default) objective
OBJECTIVES = {
    "sequence": [],
    "token-fkl": ["--objective", "token", "--divergence", "forward_kl"],
    "token-rkl": ["--objective", "token", "--divergence", "reverse_kl"],
    "token-tvd": ["--objective", "token", "--divergence", "tvd"],
    "token-jsd": ["--objective", "token", "--divergence", "jsd"],
    "token-fkl-on-policy": ["--objective", "token", "--on-policy-fraction", "0.5"],
    "sequence-on-policy": ["--on-policy-fraction", "0.5"],
}


def _train(name: str, args, folder: Path) -> float:
    """Train one objective (skipped when its model exists); returns the training seconds."""
    timing = folder / "train_seconds.json"
    if (folder / "model.safetensors").exists() and timing.exists():
        return json.loads(timing.read_text())["seconds"]
    command = [
        str(BIN / "bild-align"), "train", "--recipe", "recipes/demo-align.yaml",
        "--calibration-dataset", args.calibration, "--output-dir", str(folder),
        "--max-steps", str(args.steps), "--eval-steps", str(args.steps // 2),
        "--save-steps", str(args.steps // 2), *OBJECTIVES[name],
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    timing.write_text(json.dumps({"seconds": seconds}))
    return seconds


def _measures(folder: Path) -> tuple[dict, dict]:
    """The held-out measures before training (step 0) and of the saved (best) model."""
    states = sorted(
        folder.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name[11:])
    )
    state = json.loads(states[-1].read_text())
    evals = [e for e in state["log_history"] if "eval_expected_acceptance" in e]
    best = next(
        (e for e in evals if e["step"] == int(Path(state["best_model_checkpoint"]).name[11:])),
        evals[-1],
    )
    pick = lambda entry: {key: entry[f"eval_{key}"] for key in MEASURES}  # noqa: E731
    return pick(evals[0]), {**pick(best), "step": best["step"]}


def _eval(folder: Path, args) -> dict:
    output = folder / "eval.json"
    if not output.exists():
        command = [
            str(BIN / "bild-align"), "eval", "--small", str(folder), "--task", "gettext-de-en",
            "--split", "test", "--max-samples", str(args.eval_samples), "--sweep",
            "--rb", "3,4,6,8", "--fb", "0.2,0.3,0.4,0.5", "--baselines", "large,small",
            "--max-new-tokens", "64", "--output", str(output),
        ]  # fmt: skip
        subprocess.run(command, check=True)
    return json.loads(output.read_text())


def _bild_row(results: dict, rb: float, fb: float) -> dict:
    for row in results["methods"]:
        if row["method"] == "bild" and row["setting"] == {"rb": rb, "fb": fb}:
            return row
    raise KeyError((rb, fb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--only", help="comma-separated objective names (default: all)")
    parser.add_argument("--calibration", default="outputs/demo/calibration")
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--output-dir", default="outputs/objectives")
    parser.add_argument(
        "--train-only", action="store_true", help="train every objective, evaluate none yet"
    )
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(OBJECTIVES)
    root = Path(args.output_dir)
    summary = {"steps": args.steps, "runs": {}}
    for name in names:
        folder = root / name
        seconds = _train(name, args, folder)
        if args.train_only:
            continue
        before, after = _measures(folder)
        results = _eval(folder, args)
        demo, best = _bild_row(results, 6.0, 0.3), results["sweep"]["best"]
        best_row = _bild_row(results, best["rb"], best["fb"]) if best else None
        summary["runs"][name] = {
            "train_seconds": seconds,
            "measures_before": before,
            "measures": after,
            "large_bleu": results["methods"][0]["quality"]["score"],
            "small_bleu": results["methods"][1]["quality"]["score"],
            "demo_setting": {
                "bleu": demo["quality"]["score"],
                "calls_per_token": demo["stats"]["large_calls_per_token"],
                "speedup": demo["speedup"],
            },
            "best": None
            if best_row is None
            else {
                "rb": best["rb"],
                "fb": best["fb"],
                "bleu": best_row["quality"]["score"],
                "calls_per_token": best_row["stats"]["large_calls_per_token"],
                "speedup": best_row["speedup"],
            },
        }
        (root / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.train_only:
        return
    print(table(summary))
    (root / "summary.txt").write_text(table(summary) + "\n")


def table(summary: dict) -> str:
    lines = [
        f"{summary['steps']} optimizer steps each; held-out measures of the saved model; "
        "BiLD at rb=6 fb=0.3 and at the fastest sweep setting within 1 BLEU",
        f"{'objective':<22}{'train min':>10}{'accept':>8}{'conf +/-':>12}{'L nll':>7}"
        f"{'small BLEU':>11}{'BiLD BLEU':>10}{'calls/tok':>10}{'speedup':>8}"
        f"{'best rb/fb':>11}{'BLEU':>7}{'calls':>7}{'speedup':>8}",
    ]
    for name, run in summary["runs"].items():
        m, demo, best = run["measures"], run["demo_setting"], run["best"] or {}
        lines.append(
            f"{name:<22}{run['train_seconds'] / 60:>10.1f}{m['expected_acceptance']:>8.3f}"
            f"{m['confidence_agree']:>6.2f}/{m['confidence_disagree']:.2f}"
            f"{m['large_nll_of_small_choice']:>7.2f}{run['small_bleu']:>11.2f}"
            f"{demo['bleu']:>10.2f}{demo['calls_per_token']:>10.3f}{demo['speedup']:>7.2f}x"
            + (
                f"{best['rb']:>6g}/{best['fb']:<4g}{best['bleu']:>7.2f}"
                f"{best['calls_per_token']:>7.3f}{best['speedup']:>7.2f}x"
                if best
                else ""
            )
        )
    first = next(iter(summary["runs"].values()))
    lines.append(
        f"unaligned: accept {first['measures_before']['expected_acceptance']:.3f}; large "
        f"model BLEU {first['large_bleu']:.2f}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
