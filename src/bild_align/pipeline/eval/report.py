"""What `bild-align eval` reports: quality beside the harness's timing rows, the threshold
sweep's CSV, Pareto front and plot, and the printed table.

    rows = method_rows(methods, references, metric)     # the results file's "methods"
    results["sweep"] = sweep_report(results, csv_path, png_path, max_drop)
    print(format_results(results))
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from bild_align.measure.harness import Method, summaries
from bild_align.measure.metrics import bleu, score
from bild_align.measure.pareto import fastest_within, pareto_front
from bild_align.measure.plots import new_plot, save_plot
from bild_align.runs.files import write_text_atomic

CSV_HEADER = (
    "rb",
    "fb",
    "quality",
    "speedup",
    "median_latency_s",
    "large_calls_per_token",
    "pareto",
)
PNG_MARKER = "bild-align eval sweep"


def method_rows(methods: list[Method], references: list[str], metric: str) -> list[dict]:
    """The harness's rows, with quality: the task's metric on the rows that have a reference
    (rows without one are left out of it), and BLEU against the large model."""
    scored = [index for index, reference in enumerate(references) if reference]
    methods = [method for method in methods if method.error is None]
    large_outputs = methods[0].outputs
    rows = summaries(methods)
    for method, row in zip(methods, rows, strict=True):
        row["quality"] = (
            score(
                metric,
                [method.outputs[i] for i in scored],
                [references[i] for i in scored],
            )
            if scored
            else None
        )
        row["agreement_with_large"] = bleu(method.outputs, large_outputs)
        row["outputs"] = method.outputs
    engine = next((method for method in methods if method.name == "engine"), None)
    if engine is not None and sum(engine.seconds):  # over the large model on our decoder
        for method, row in zip(methods, rows, strict=True):
            total = sum(method.seconds)
            row["speedup_over_engine"] = sum(engine.seconds) / total if total else 0.0
    return rows


def quality_value(row: dict) -> float:
    """The task metric where references exist, else BLEU against the large model's outputs."""
    return (row["quality"] or row["agreement_with_large"])["score"]


def sweep_report(results: dict, csv_path: Path, png_path: Path, max_drop: float) -> dict:
    """Write the sweep's CSV and plot; the Pareto front and the fastest setting within
    `max_drop` of the large model's quality."""
    methods = results["methods"]
    bild_rows = [row for row in methods if row["method"] == "bild"]
    points = [(quality_value(row), row["speedup"]) for row in bild_rows]
    front = pareto_front(points)
    large_quality = quality_value(methods[0])
    best = fastest_within(points, large_quality, max_drop)
    handle = io.StringIO()
    writer = csv.writer(handle)
    writer.writerow(CSV_HEADER)
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
    plot_sweep(methods, bild_rows, points, front, png_path)
    return {
        "csv": str(csv_path),
        "plot": str(png_path),
        "pareto": [row["setting"] for row, on in zip(bild_rows, front, strict=True) if on],
        "max_drop": max_drop,
        "best": None
        if best is None
        else {
            **bild_rows[best]["setting"],
            "quality": points[best][0],
            "speedup": points[best][1],
        },
    }


def plot_sweep(methods, bild_rows, points, front, path: Path) -> None:
    figure, axes = new_plot()
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
            [row["speedup"]], [quality_value(row)], marker=marker, c="k", label=row["method"]
        )
    save_plot(
        figure,
        axes,
        path,
        marker=PNG_MARKER,
        x="speedup over the large model",
        y="quality",
        title="BiLD thresholds (rb, fb): quality vs speed",
    )


def failed_methods(methods: list[Method]) -> list[dict]:
    """The methods that raised, each with its setting and the error in one line."""
    return [
        {"method": method.name, "setting": method.setting, "error": method.error}
        for method in methods
        if method.error is not None
    ]


def _setting_text(setting: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in setting.items())


def format_results(results: dict) -> str:
    config = results["config"]
    metric = config["metric"]
    lines = [
        f"{config['task']} / {config['split']}: {len(config['sample_ids'])} examples, batch "
        f"{config['batch_size']}, {results['environment']['device']} {config['dtype']}"
        f" ({results['environment'].get('cpu_threads', '?')} threads)",
        f"{'method':<10}{'rb':>5}{'fb':>6}{metric:>11}{'vs large':>9}{'median ms':>11}"
        f"{'tokens/s':>10}{'speedup':>9}{'/engine':>8}{'L calls/tok':>12}{'fallback':>9}"
        f"{'rollback':>9}",
    ]
    large_quality = quality_value(results["methods"][0])
    for row in results["methods"]:
        quality = quality_value(row)
        stats = row.get("stats")
        setting = row["setting"]
        lines.append(
            f"{row['method']:<10}{setting.get('rb', ''):>5}{setting.get('fb', ''):>6}"
            f"{quality:>11.2f}{quality - large_quality:>+9.2f}"
            f"{row['latency']['median_s'] * 1000:>11.1f}{row.get('tokens_per_s', 0):>10.1f}"
            f"{row['speedup']:>8.2f}x"
            + (f"{row['speedup_over_engine']:>7.2f}x" if "speedup_over_engine" in row else " " * 8)
            + (
                f"{stats['large_calls_per_token']:>12.3f}{stats['fallback_rate']:>9.1%}"
                f"{stats['rollback_rate']:>9.1%}"
                if stats
                else ""
            )
        )
    if any("speedup_over_engine" in row for row in results["methods"]):
        lines.append(
            "speedup: over transformers' generate of the large model; /engine: over the large "
            "model alone on bild-align's decoder"
        )
    signature = results["methods"][0]["quality"] or results["methods"][0]["agreement_with_large"]
    lines.append(
        f"quality: {signature['metric']} ({signature['signature']})"
        + ("" if results["methods"][0]["quality"] else " against the large outputs")
    )
    if config.get("reference_compat") and 0.0 in config.get("rollback_threshold", ()):
        lines.append(
            "note: with --reference-compat, rb=0 is not exact: the original decoder does not "
            "check the drafted tail (outputs may differ from the large model's)"
        )
    for failed in results.get("failed_methods", []):
        lines.append(
            f"failed: {failed['method']} {_setting_text(failed['setting'])}: {failed['error']} "
            "(left out; the other methods' results are kept)"
        )
    missing = config.get("rows_without_reference") or 0
    if results["methods"][0]["quality"] and missing:
        lines.append(
            f"note: {missing} of {len(config['sample_ids'])} rows have no reference and are "
            f"left out of {metric}"
        )
    sweep = results.get("sweep")
    if sweep:
        best = sweep["best"]
        lines.append(
            "fastest within {:.1f} of the large model: {}".format(
                sweep["max_drop"],
                "none faster than the large model"
                if best is None
                else f"rb={best['rb']:g} fb={best['fb']:g} ({best['quality']:.2f}, "
                f"{best['speedup']:.2f}x)",
            )
        )
        lines.append(f"sweep: {sweep['csv']}  plot: {sweep['plot']}")
    return "\n".join(lines)
