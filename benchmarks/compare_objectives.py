"""Alignment objectives compared fairly on the demo pair: each objective trained on the same
calibration rows for the same number of optimizer steps (with its learned fallback head), then
`bild-align tune` on the validation split (every fallback rule, one quality budget), then the
tuned setting measured on the whole test split at batch 1 against the large model.

    .venv/bin/bild-align calibrate --split train --output outputs/demo/calibration
    .venv/bin/python benchmarks/compare_objectives.py [--steps 1000] [--only sequence,calibrated]
        [--output-dir outputs/objectives]

`unaligned` is the demo's small model as shipped (only its fallback head is fitted). Each step's
output is reused when it exists, so an interrupted comparison continues where it stopped. The
table and a JSON with every figure go to OUTPUT_DIR/summary.{txt,json}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bild_align.data.tasks import get_task, load_rows
from bild_align.defaults import demo_model
from bild_align.measure.metrics import segment_statistics
from bild_align.measure.significance import paired_drop, resample_weights
from bild_align.pipeline.train.distill import MEASURES

BIN = Path(sys.executable).parent
RULES = ("max_prob", "entropy", "learned")
# name -> training keys; None: the small model as shipped
OBJECTIVES = {
    "sequence": [],
    "calibrated": ["--objective", "calibrated"],
    "unaligned": None,
    "token-fkl": ["--objective", "token", "--divergence", "forward_kl"],
    "sequence-on-policy": ["--on-policy-fraction", "0.5"],
}


def _bild_align(*arguments: str) -> None:
    subprocess.run([str(BIN / "bild-align"), *arguments], check=True)


def _train(name: str, args, folder: Path) -> float:
    """Train one objective and its fallback head (skipped when done); the training seconds."""
    timing = folder / "train_seconds.json"
    if timing.exists():
        return json.loads(timing.read_text())["seconds"]
    common = [
        "--recipe", "recipes/demo-align.yaml", "--calibration-dataset", args.calibration,
        "--output-dir", str(folder),
    ]  # fmt: skip
    start = time.perf_counter()
    if OBJECTIVES[name] is None:
        folder.mkdir(parents=True, exist_ok=True)
        for file in Path(demo_model("small")).iterdir():
            shutil.copy2(file, folder / file.name)
        _bild_align("train", *common, "--fallback-head-only")
    else:
        steps = str(args.steps)
        half = str(args.steps // 2)
        _bild_align(
            "train", *common, "--max-steps", steps, "--eval-steps", half, "--save-steps", half,
            *OBJECTIVES[name],
        )  # fmt: skip
    seconds = time.perf_counter() - start
    timing.write_text(json.dumps({"seconds": seconds}))
    return seconds


def _measures(folder: Path) -> dict | None:
    """The held-out alignment measures of the saved (best) model; None for `unaligned`."""
    states = sorted(
        folder.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name[11:])
    )
    if not states:
        return None
    state = json.loads(states[-1].read_text())
    evals = [e for e in state["log_history"] if "eval_expected_acceptance" in e]
    best_step = int(Path(state["best_model_checkpoint"]).name[11:])
    best = next((e for e in evals if e["step"] == best_step), evals[-1])
    return {"step": best["step"], **{key: best[f"eval_{key}"] for key in MEASURES}}


def _tune(folder: Path, args) -> dict:
    output = folder / "tune.json"
    if not output.exists():
        # exit 2 means "no setting meets the budget" (the front is written anyway)
        subprocess.run(
            [str(BIN / "bild-align"), "tune", "--small", str(folder), "--output", str(output)]
            + (["--max-samples", str(args.tune_samples)] if args.tune_samples else []),
            check=False,
        )
    return json.loads(output.read_text())


def _rule_best(tune: dict) -> dict:
    """Per fallback rule: its fastest searched setting within the budget (modelled speedup)."""
    best = {}
    for setting in tune["settings"]:
        rule = setting.get("rule")
        faster = rule not in best or setting["speedup"] > best[rule]["speedup"]
        if rule and setting["within_budget"] and faster:
            best[rule] = setting
    return {
        rule: {k: best[rule][k] for k in ("key", "drop", "upper_drop", "speedup")}
        | {"calls_per_token": best[rule]["large_calls_per_token"]}
        for rule in best
    }


def _test(folder: Path, chosen: dict, args) -> dict:
    """The tuned setting on the test split at batch 1, with the large and small models."""
    output = folder / "eval_test.json"
    if not output.exists():
        command = ["eval", "--small", str(folder), "--split", "test", "--batch-size", "1"]
        command += ["--baselines", "large,small", "--output", str(output)]
        if chosen["method"] == "bild":
            command += [
                "--rb", str(chosen["rb"]), "--fb", str(chosen["fb"]),
                "--max-small-steps", str(chosen["steps"]), "--fallback", chosen["rule"],
            ]  # fmt: skip
        if args.test_samples:
            command += ["--max-samples", str(args.test_samples)]
        _bild_align(*command)
    results = json.loads(output.read_text())
    rows = {row["method"]: row for row in results["methods"]}
    references = [
        row["reference"]
        for row in load_rows(get_task("gettext-de-en"), "test", args.test_samples or None)
    ]
    statistics = {
        method: segment_statistics("bleu", row["outputs"], references)
        for method, row in rows.items()
    }
    weights = resample_weights(len(references), 1000, seed=0)
    measured = {}
    for method, row in rows.items():
        drop = paired_drop("bleu", statistics["large"], statistics[method], weights)
        measured[method] = {
            "bleu": row["quality"]["score"],
            "drop": drop["drop"],
            "upper_drop": drop["upper"],
            "speedup": float(row["speedup"]),
            "calls_per_token": (row.get("stats") or {}).get("large_calls_per_token"),
        }
    measured["rows"] = len(references)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--only", help="comma-separated objective names (default: all)")
    parser.add_argument("--calibration", default="outputs/demo/calibration")
    parser.add_argument("--tune-samples", type=int, default=0, help="0: the whole split")
    parser.add_argument("--test-samples", type=int, default=0, help="0: the whole split")
    parser.add_argument("--output-dir", default="outputs/objectives")
    parser.add_argument(
        "--train-only", action="store_true", help="train the objectives, tune and measure none"
    )
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(OBJECTIVES)
    unknown = sorted(set(names) - set(OBJECTIVES))
    if unknown:
        parser.error(f"unknown objective(s) {', '.join(unknown)}; known: {', '.join(OBJECTIVES)}")
    root = Path(args.output_dir)
    summary_file = root / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {"runs": {}}
    summary["steps"] = args.steps
    for name in names:
        folder = root / name
        seconds = _train(name, args, folder)
        if args.train_only:
            continue
        tune = _tune(folder, args)
        chosen = tune["chosen"] or tune["closest"]
        summary["runs"][name] = {
            "train_seconds": seconds,
            "measures": _measures(folder),
            "tuned": {
                k: chosen.get(k)
                for k in ("key", "method", "drop", "upper_drop", "speedup", "measured_speedup")
            }
            | {"calls_per_token": chosen["large_calls_per_token"]},
            "per_rule": _rule_best(tune),
            "test": _test(folder, chosen, args),
        }
        root.mkdir(parents=True, exist_ok=True)
        summary_file.write_text(json.dumps(summary, indent=1))
        print(table(summary), flush=True)
    if summary["runs"]:
        (root / "summary.txt").write_text(table(summary) + "\n")


def table(summary: dict) -> str:
    lines = [
        f"{summary['steps']} optimizer steps each; tuned on validation (drop <= 1 BLEU at 95% "
        "by paired bootstrap), measured on test at batch 1",
        f"{'objective':<20}{'train min':>9}{'accept':>7}{'conf +/-':>11}  {'tuned setting':<30}"
        f"{'val calls':>9}{'max_prob':>9}{'entropy':>8}{'learned':>8}"
        f"{'test BLEU':>10}{'drop':>6}{'bound':>6}{'calls':>6}{'speedup':>8}",
    ]
    for name, run in summary["runs"].items():
        m, tuned, test = run["measures"], run["tuned"], run["test"]
        method = "bild" if tuned["method"] == "bild" else tuned["method"]
        measured = test[method]
        rules = "".join(
            f"{run['per_rule'][r]['calls_per_token']:>{w}.3f}"
            if r in run["per_rule"]
            else f"{'-':>{w}}"
            for r, w in zip(RULES, (9, 8, 8), strict=True)
        )
        measures = (
            f"{m['expected_acceptance']:>7.3f}{m['confidence_agree']:>6.2f}/"
            f"{m['confidence_disagree']:.2f}"
            if m
            else f"{'-':>7}{'-':>11}"
        )
        calls = measured["calls_per_token"]
        lines.append(
            f"{name:<20}{run['train_seconds'] / 60:>9.1f}{measures}  {tuned['key']:<30}"
            f"{tuned['calls_per_token']:>9.3f}{rules}{measured['bleu']:>10.2f}"
            f"{measured['drop']:>6.2f}{measured['upper_drop']:>6.2f}"
            f"{calls if calls is not None else 1.0:>6.3f}{measured['speedup']:>7.2f}x"
        )
    first = next(iter(summary["runs"].values()))["test"]
    lines.append(
        f"large model: test BLEU {first['large']['bleu']:.2f} on {first['rows']} sentences; "
        "columns max_prob/entropy/learned: validation calls per token of each "
        "rule's fastest modelled setting within the budget"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
