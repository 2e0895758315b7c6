"""Stage three: measure a pair the way the paper does, beside the baselines, and sweep thresholds.

    bild-align eval --small S --large L --task iwslt2017-de-en --rb 2 --fb 0.6
    bild-align eval ... --sweep --rb 1,2,3,5 --fb 0.3,0.5,0.7,0.9

    results = run_eval(EvalConfig(small="S", large="L", task="iwslt2017-de-en"))

Every method runs on the same examples in this process, one input at a time, after a warm-up,
interleaved per example so that machine drift hits all alike, with the device synchronised and
only generation timed. The large model always runs (it is the reference for speed and for
exactness); BiLD runs at every (rb, fb) setting asked for, so a sweep generates the large
model's outputs once. Results (quality with its signature, latency, speedup, decoder
statistics, the outputs, and the full configuration) go to a JSON file; a sweep adds a CSV, the
Pareto front and a PNG plot.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bild_align.core.decoding import BiLDStats, bild_generate
from bild_align.errors import UserError
from bild_align.io_utils import (
    append_jsonl,
    check_output_file,
    read_jsonl,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from bild_align.metrics import bleu, score
from bild_align.models import (
    check_loaded_pair,
    load_seq2seq,
    resolve_device,
    use_plain_generation,
)
from bild_align.pareto import fastest_within, pareto_front
from bild_align.tasks import get_task, load_rows
from bild_align.timing import environment, summarize, timed

BASELINES = ("large", "small", "assisted")


@dataclass
class EvalConfig:
    small: str
    large: str
    task: str
    split: str = "validation"
    max_samples: int | None = None
    rb: tuple[float, ...] = (2.0,)
    fb: tuple[float, ...] = (0.6,)
    sweep: bool = False
    max_small_steps: int = 10
    max_new_tokens: int | None = None  # default: the task's max_target_length
    max_source_length: int | None = None
    baselines: tuple[str, ...] = BASELINES
    reference_compat: bool = False
    max_drop: float = 1.0
    dtype: str = "float32"
    device: str = "auto"
    output: str = "results/eval.json"
    source_column: str | None = None
    target_column: str | None = None
    prefix: str | None = None

    def validate(self) -> None:
        unknown = [name for name in self.baselines if name not in BASELINES]
        if unknown:
            raise UserError(
                f"unknown baseline {', '.join(unknown)}; choose from {', '.join(BASELINES)}"
            )
        numbers = [*self.rb, *self.fb, self.max_drop]
        if not all(isinstance(x, int | float) and math.isfinite(x) for x in numbers):
            raise UserError("--rb, --fb and --max-drop must be finite numbers")
        if not self.rb or any(rb < 0 for rb in self.rb):
            raise UserError("--rb values must be >= 0 (0 is the exact mode)")
        if not self.fb or any(fb < 0 for fb in self.fb):
            raise UserError("--fb values must be >= 0")
        if self.max_drop < 0:
            raise UserError("--max-drop must be >= 0")
        if self.sweep and any(fb > 1 for fb in self.fb):
            raise UserError("in a sweep, --fb values must lie in [0, 1]")
        if not self.sweep and (len(self.rb) > 1 or len(self.fb) > 1):
            raise UserError("several --rb/--fb values need --sweep")


@dataclass
class Run:
    """One method at one setting, accumulated over the examples."""

    name: str
    setting: dict
    generate: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, BiLDStats | None]]
    seconds: list[float] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    stats: BiLDStats | None = None


def _runs(config: EvalConfig, small, large, max_new_tokens: int, vocab_size: int) -> list[Run]:
    def hf_generate(model, **extra):
        def run(input_ids, attention_mask):
            sequences = model.generate(
                input_ids,
                attention_mask=attention_mask,
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
                **extra,
            )
            return sequences, None

        return run

    def bild(rb, fb):
        def run(input_ids, attention_mask):
            out = bild_generate(
                small,
                large,
                input_ids,
                attention_mask,
                fallback_threshold=fb,
                rollback_threshold=rb,
                max_small_steps=config.max_small_steps,
                max_new_tokens=max_new_tokens,
                reference_compat=config.reference_compat,
                vocab_size=vocab_size,
            )
            return out.sequences, out.stats

        return run

    runs = [Run("large", {}, hf_generate(large))]
    if "small" in config.baselines:
        runs.append(Run("small", {}, hf_generate(small)))
    if "assisted" in config.baselines:
        runs.append(
            Run("assisted", {"assistant": "small"}, hf_generate(large, assistant_model=small))
        )
    for rb in config.rb:
        for fb in config.fb:
            runs.append(Run("bild", {"rb": rb, "fb": fb}, bild(rb, fb), stats=BiLDStats()))
    return runs


def _summaries(runs: list[Run], references: list[str], metric: str) -> list[dict]:
    large = runs[0]
    large_total = sum(large.seconds)
    has_references = any(references)
    rows = []
    for run in runs:
        total = sum(run.seconds)
        row = {
            "method": run.name,
            "setting": run.setting,
            "quality": score(metric, run.outputs, references) if has_references else None,
            "agreement_with_large": bleu(run.outputs, large.outputs),
            "identical_to_large": sum(
                a == b for a, b in zip(run.outputs, large.outputs, strict=True)
            ),
            "latency": summarize(run.seconds),
            "speedup": large_total / total if total else 0.0,
            "outputs": run.outputs,
        }
        if run.stats is not None:
            row["stats"] = run.stats.as_dict()
        rows.append(row)
    return rows


def _quality_value(row: dict) -> float:
    """The task metric where references exist, else BLEU against the large model's outputs."""
    return (row["quality"] or row["agreement_with_large"])["score"]


def _output_paths(config: EvalConfig) -> list[Path]:
    base = Path(config.output)
    return [base, *((base.with_suffix(".csv"), base.with_suffix(".png")) if config.sweep else ())]


def partial_path(output: str | Path) -> Path:
    """Where finished examples are kept while an eval runs (removed once results are written)."""
    output = Path(output)
    return output.with_name(output.name + ".partial.jsonl")


def _resume(partial: Path, fingerprint: dict, runs: list[Run]) -> int:
    """Load the examples an interrupted run with the same fingerprint finished; their count."""
    records = read_jsonl(partial)
    if not records:
        partial.unlink(missing_ok=True)
        append_jsonl(partial, {"fingerprint": fingerprint})
        return 0
    if records[0].get("fingerprint") != fingerprint:
        raise UserError(
            f"{partial} holds the finished examples of an interrupted eval with other settings; "
            "run that command again to finish it, choose another --output, or delete the file"
        )
    examples = records[1:]
    for record in examples:
        _add_example(runs, record["runs"])
    # rewrite without any torn line, so that appends continue a clean file
    write_text_atomic(partial, "".join(json.dumps(r) + "\n" for r in records))
    return len(examples)


def _add_example(runs: list[Run], results: list[dict]) -> None:
    """Add one example's results (one per run, in order: time, output, stats) to the runs."""
    for run, result in zip(runs, results, strict=True):
        run.seconds.append(result["seconds"])
        run.outputs.append(result["output"])
        if result["stats"] is not None:
            run.stats += BiLDStats(**result["stats"])


def run_eval(config: EvalConfig) -> dict:
    config.validate()
    for path in _output_paths(config):
        check_output_file(path)
    task = get_task(
        config.task,
        source_column=config.source_column,
        target_column=config.target_column,
        prefix=config.prefix,
    )
    max_new_tokens = config.max_new_tokens or task.max_target_length
    max_source_length = config.max_source_length or task.max_source_length
    rows = load_rows(task, config.split, config.max_samples)
    device = resolve_device(config.device)
    large, tokenizer, large_revision = load_seq2seq(config.large, dtype=config.dtype, device=device)
    small, small_tokenizer, small_revision = load_seq2seq(
        config.small, dtype=config.dtype, device=device
    )
    vocab_size = check_loaded_pair(small, small_tokenizer, large, tokenizer)
    generation = use_plain_generation(large)  # every method decodes with the same settings
    use_plain_generation(small)
    runs = _runs(config, small, large, max_new_tokens, vocab_size)
    settings = {
        "small_revision": small_revision,
        "large_revision": large_revision,
        "task_source": task.source,
        "metric": task.metric,
        "prefix": task.prefix,
        "max_new_tokens": max_new_tokens,
        "max_source_length": max_source_length,
        "sample_ids": list(rows["id"]),
        "batch_size": 1,
        "generation": generation,
    }
    fingerprint = {
        **{key: value for key, value in asdict(config).items() if key != "output"},
        **settings,
    }
    partial = partial_path(config.output)
    done = _resume(partial, json.loads(json.dumps(fingerprint)), runs)
    if done:
        print(f"resuming: {done} of {len(rows)} examples already done ({partial})")

    encoded = [
        tokenizer(source, return_tensors="pt", truncation=True, max_length=max_source_length)
        for source in list(rows["source"])
    ]
    try:
        _measure(runs, encoded, done, tokenizer, device, partial)
    except KeyboardInterrupt:
        kept = len(runs[0].outputs)
        print(
            f"\ninterrupted: {kept} of {len(encoded)} examples are kept in {partial}; run the "
            "same command again to finish",
            file=sys.stderr,
        )
        raise

    methods = _summaries(runs, list(rows["reference"]), task.metric)
    results = {
        "config": {**asdict(config), **settings, "resumed_after": done or None},
        "environment": environment(device),
        "methods": methods,
    }
    if config.sweep:
        results["sweep"] = _sweep_report(results, config)
    write_json_atomic(config.output, results)
    partial.unlink(missing_ok=True)
    return results


def _measure(runs: list[Run], encoded: list, done: int, tokenizer, device, partial: Path) -> None:
    """Time every run on every example not yet done, interleaved; append each finished example
    to `partial` as soon as all its runs are done."""
    with torch.inference_mode():
        first = encoded[0].to(device)
        for run in runs:  # warm-up: kernels, caches, allocator
            run.generate(first.input_ids, first.attention_mask)
        total = len(encoded) * len(runs)
        with tqdm(total=total, initial=done * len(runs), desc="eval", unit="run") as progress:
            for batch in encoded[done:]:
                batch = batch.to(device)
                record = []
                for run in runs:
                    progress.set_postfix_str(f"{run.name} {run.setting}"[:40])
                    seconds, (sequences, stats) = timed(
                        lambda r=run, b=batch: r.generate(b.input_ids, b.attention_mask), device
                    )
                    text = tokenizer.decode(sequences[0], skip_special_tokens=True)
                    record.append(
                        {
                            "seconds": seconds,
                            "output": text,
                            "stats": None if stats is None else asdict(stats),
                        }
                    )
                    progress.update(1)
                _add_example(runs, record)
                append_jsonl(partial, {"runs": record})


def _sweep_report(results: dict, config: EvalConfig) -> dict:
    methods = results["methods"]
    bild_rows = [row for row in methods if row["method"] == "bild"]
    points = [(_quality_value(row), row["speedup"]) for row in bild_rows]
    front = pareto_front(points)
    large_quality = _quality_value(methods[0])
    best = fastest_within(points, large_quality, config.max_drop)
    base = Path(config.output)
    csv_path, png_path = base.with_suffix(".csv"), base.with_suffix(".png")
    handle = io.StringIO()
    writer = csv.writer(handle)
    writer.writerow(
        [
            "rb",
            "fb",
            "quality",
            "speedup",
            "median_latency_s",
            "large_calls_per_token",
            "pareto",
        ]
    )
    for row, (quality, speedup), on_front in zip(bild_rows, points, front, strict=True):
        writer.writerow(
            [
                row["setting"]["rb"],
                row["setting"]["fb"],
                round(quality, 4),
                round(speedup, 4),
                round(row["latency"]["median_s"], 6),
                round(row["stats"]["large_calls_per_token"], 4),
                int(on_front),
            ]
        )
    write_text_atomic(csv_path, handle.getvalue())
    _plot(methods, bild_rows, points, front, png_path)
    return {
        "csv": str(csv_path),
        "plot": str(png_path),
        "pareto": [row["setting"] for row, on in zip(bild_rows, front, strict=True) if on],
        "max_drop": config.max_drop,
        "best": None
        if best is None
        else {
            **bild_rows[best]["setting"],
            "quality": points[best][0],
            "speedup": points[best][1],
        },
    }


def _plot(methods, bild_rows, points, front, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no process-wide backend or figure state

    figure = Figure(figsize=(7, 5))
    axes = figure.subplots()
    axes.scatter(
        [p[1] for p in points],
        [p[0] for p in points],
        c=["C3" if on else "C0" for on in front],
        label="BiLD (red: Pareto front)",
    )
    for row, (quality, speedup) in zip(bild_rows, points, strict=True):
        label = f"({row['setting']['rb']:g}, {row['setting']['fb']:g})"
        axes.annotate(
            label, (speedup, quality), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    for row, marker in zip([m for m in methods if m["method"] != "bild"], "s^D", strict=False):
        axes.scatter(
            [row["speedup"]], [_quality_value(row)], marker=marker, c="k", label=row["method"]
        )
    axes.set_xlabel("speedup over the large model")
    axes.set_ylabel("quality")
    axes.set_title("BiLD thresholds (rb, fb): quality vs speed")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, dpi=120, format="png")
    write_bytes_atomic(path, image.getvalue())


def format_results(results: dict) -> str:
    config = results["config"]
    metric = config["metric"]
    lines = [
        f"{config['task']} / {config['split']}: {len(config['sample_ids'])} examples, batch 1, "
        f"{results['environment']['device']} {config['dtype']}",
        f"{'method':<10}{'rb':>5}{'fb':>6}{metric:>11}{'vs large':>9}{'median ms':>11}"
        f"{'speedup':>9}{'L calls/tok':>12}{'fallback':>9}{'rollback':>9}",
    ]
    large_quality = _quality_value(results["methods"][0])
    for row in results["methods"]:
        quality = _quality_value(row)
        stats = row.get("stats")
        setting = row["setting"]
        lines.append(
            f"{row['method']:<10}{setting.get('rb', ''):>5}{setting.get('fb', ''):>6}"
            f"{quality:>11.2f}{quality - large_quality:>+9.2f}"
            f"{row['latency']['median_s'] * 1000:>11.1f}{row['speedup']:>8.2f}x"
            + (
                f"{stats['large_calls_per_token']:>12.3f}{stats['fallback_rate']:>9.1%}"
                f"{stats['rollback_rate']:>9.1%}"
                if stats
                else ""
            )
        )
    signature = results["methods"][0]["quality"] or results["methods"][0]["agreement_with_large"]
    lines.append(
        f"quality: {signature['metric']} ({signature['signature']})"
        + ("" if results["methods"][0]["quality"] else " against the large outputs")
    )
    sweep = results.get("sweep")
    if sweep:
        best = sweep["best"]
        lines.append(
            "fastest within {:.1f} of the large model: {}".format(
                sweep["max_drop"],
                "none"
                if best is None
                else f"rb={best['rb']:g} fb={best['fb']:g} ({best['quality']:.2f}, "
                f"{best['speedup']:.2f}x)",
            )
        )
        lines.append(f"sweep: {sweep['csv']}  plot: {sweep['plot']}")
    return "\n".join(lines)
