"""`bild-align bench`'s terminal table.

print(format_table(results))
"""

from __future__ import annotations

_SHORT_NAMES = {
    "num_assistant_tokens_schedule": "schedule",
    "num_assistant_tokens": "k",
    "max_small_steps": "steps",
}


def _short_setting(setting: dict) -> str:
    return " ".join(
        f"{_SHORT_NAMES.get(key, key)}={value}"
        for key, value in setting.items()
        if key != "tuned_over"
    )


def format_table(results: dict) -> str:
    lines = []
    config = results["config"]
    lines.append(
        f"preset {config['preset']} {config['preset_shape']} | {config['examples']} inputs x "
        f"{config['max_new_tokens']} new tokens | {results['environment']['device']}, "
        f"{config['dtype']}, torch {results['environment']['torch']}, transformers "
        f"{results['environment']['transformers']}"
    )
    rows = [row for level in results["levels"] for row in level["methods"]]
    name_width = max([len("method")] + [len(row["method"]) for row in rows]) + 2
    setting_width = max([len("setting")] + [len(_short_setting(row["setting"])) for row in rows])
    setting_width += 2
    header = (
        f"{'method':<{name_width}}{'setting':<{setting_width}}{'median ms':>10}{'speedup':>9}"
        f"{'same':>6}{'L calls/tok':>12}{'small share':>12}{'overhead':>9}"
    )
    for level in results["levels"]:
        lines.append("")
        lines.append(f"eps={level['eps']}  agreement={level['agreement']:.3f}")
        lines.append(header)
        for row in level["methods"]:
            setting = _short_setting(row["setting"])
            stats = row.get("stats")
            same = f"{row['identical_to_large']}/{row['latency']['count']}"
            lines.append(
                f"{row['method']:<{name_width}}{setting:<{setting_width}}"
                f"{row['latency']['median_s'] * 1000:>10.1f}"
                f"{row['speedup']:>8.2f}x{same:>6}"
                + (
                    f"{stats['large_calls_per_token']:>12.3f}{stats['small_token_share']:>12.2f}"
                    f"{row['overhead_share'] * 100:>8.1f}%"
                    if stats
                    else ""
                )
            )
        for batch in level.get("batches", []):
            lines.append(
                f"  batch {batch['batch_size']} ({batch['batches']} batches): "
                + ", ".join(
                    f"{row['method']} {row.get('tokens_per_s', 0):.0f} tok/s "
                    f"{row['speedup']:.2f}x same {row['identical_to_large']}"
                    for row in batch["methods"]
                )
            )
    return "\n".join(lines)
