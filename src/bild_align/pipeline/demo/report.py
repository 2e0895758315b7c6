"""What `bild-align demo` prints at the end: one table of the unaligned and aligned pair, the
fixed and the tuned setting, and the aligned drafter made from the large model, at batch 1
and batch 8.

    print(summary_table(results, config))
"""

from __future__ import annotations

from bild_align.configs import DemoConfig


def _find(results: dict, method: str, setting: dict | None = None) -> dict | None:
    for row in results["methods"]:
        if row["method"] == method and (setting is None or row["setting"] == setting):
            return row
    return None


def _line(label: str, row: dict, reference: str = "median", width: int = 44) -> str:
    stats = row.get("stats")
    calls = f"{stats['large_calls_per_token']:.3f}" if stats else ""
    timing = (
        f"{row['latency']['median_s'] * 1000:>11.1f}"
        if reference == "median"
        else f"{row['tokens_per_s']:>11.1f}"
    )
    quality = row["quality"]["score"]
    engine = row.get("speedup_over_engine")
    over_engine = f"{engine:>7.2f}x" if engine is not None else " " * 8
    return f"{label:<{width}}{quality:>7.2f}{timing}{row['speedup']:>8.2f}x{over_engine}{calls:>13}"


def summary_table(results: dict, config: DemoConfig) -> str:
    """The demo's tables: quality, latency (or tokens/s at batch 8), speedup over the large
    model's `generate` (and, where measured, over the large model alone on our engine) and
    large-model calls per token of every run."""
    unaligned, aligned = results["unaligned"], results["aligned"]
    rb, fb = config.rollback_threshold, config.fallback_threshold
    chosen = {"rb": rb, "fb": fb}  # as eval's results name a setting
    best = aligned["sweep"]["best"]
    rows = [
        ("large model alone", _find(unaligned, "large")),
        ("small model alone (unaligned)", _find(unaligned, "small")),
        ("small model alone (aligned)", _find(aligned, "small")),
        ("assisted generation (transformers)", _find(unaligned, "assisted")),
        (f"BiLD unaligned rb={rb:g} fb={fb:g}", _find(unaligned, "bild", chosen)),
        (f"BiLD aligned rb={rb:g} fb={fb:g}", _find(aligned, "bild", chosen)),
    ]
    if best is not None:
        setting = {"rb": best["rb"], "fb": best["fb"]}
        label = f"BiLD aligned, best sweep rb={best['rb']:g} fb={best['fb']:g}"
        rows.append((label, _find(aligned, "bild", setting)))
    tuned = results.get("tuned_batch1")
    if tuned is not None:
        rows.append(("large model alone, our engine", _find(tuned, "engine")))
        rows.append((f"BiLD aligned, tuned {_tuned_words(tuned)}", _find(tuned, "bild")))
    drafter = results.get("drafter_tuned_batch1") or results.get("drafter_fixed_batch1")
    layers = f"{config.drafter_layers}-layer drafter"
    if drafter is not None:
        words = _tuned_words(drafter) if "drafter_tuned_batch1" in results else "fixed"
        rows.append((f"large model alone (the {layers}'s run)", _find(drafter, "large")))
        rows.append((f"{layers} alone (aligned)", _find(drafter, "small")))
        rows.append((f"BiLD {layers}, {words}", _find(drafter, "bild")))
    rows = [(label, row) for label, row in rows if row is not None]
    batched = []
    if "tuned_batch8" in results:
        fixed, tuned = results["fixed_batch8"], results["tuned_batch8"]
        # each BiLD row's speedup is over the large model of its own run, shown above it
        batched = [
            ("large model alone", _find(fixed, "large")),
            (f"BiLD aligned rb={rb:g} fb={fb:g}", _find(fixed, "bild")),
            ("large model alone (the tuned setting's run)", _find(tuned, "large")),
            (f"BiLD aligned, tuned {_tuned_words(tuned)}", _find(tuned, "bild")),
        ]
    if "drafter_tuned_batch8" in results:
        drafter = results["drafter_tuned_batch8"]
        batched += [
            (f"large model alone (the {layers}'s run)", _find(drafter, "large")),
            (f"BiLD {layers}, tuned {_tuned_words(drafter)}", _find(drafter, "bild")),
        ]
    width = max(44, *(len(label) + 2 for label, _ in rows + batched))  # the labels line up
    metric = unaligned["config"]["metric"].upper()
    environment = unaligned["environment"]
    lines = [
        f"\ngettext-de-en test split, {len(unaligned['config']['sample_ids'])} sentences, batch 1,"
        f" {environment['device']} ({environment['cpu_threads']} threads)",
        f"{'run':<{width}}{metric:>7}{'median ms':>11}{'speedup':>9}{'/engine':>8}"
        f"{'L calls/tok':>13}",
    ]
    lines += [_line(label, row, width=width) for label, row in rows]
    if batched:
        lines += [
            "\nbatch 8 (tokens/s; speedup over the large model's batched generate)",
            f"{'run':<{width}}{metric:>7}{'tokens/s':>11}{'speedup':>9}{'/engine':>8}"
            f"{'L calls/tok':>13}",
        ]
        lines += [_line(label, row, "tokens", width) for label, row in batched]
    lines.append(f"BLEU: {unaligned['methods'][0]['quality']['signature']}")
    lines.append(f"sweep plot: {aligned['sweep']['plot']}  (CSV: {aligned['sweep']['csv']})")
    return "\n".join(lines)


def _tuned_words(results: dict) -> str:
    config = results["config"]
    return (
        f"{config['fallback_rule']} rb={config['rollback_threshold'][0]:g} "
        f"fb={config['fallback_threshold'][0]:g} "
        f"steps={config['max_small_steps']}"
    )
