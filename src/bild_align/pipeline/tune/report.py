"""What `bild-align tune` reports: every setting judged against the budget and the front, the
advice, the front's plot and the terminal summary.

points = settings_on_front(judged, speed, session.done, max_drop, min_quality)
chosen = fastest_within_budget(points)
results = tune_results(config, session, points, chosen, costs)   # what tune.json holds
plot_front(results, Path("results/tune.png"))
print(format_summary(results))
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from bild_align.measure.pareto import pareto_front
from bild_align.measure.plots import new_plot, save_plot
from bild_align.pipeline.tune.search import budget_met, setting_fields, setting_key

PNG_MARKER = "bild-align tune front"


def fastest_within_budget(points: list[dict]) -> dict | None:
    allowed = [p for p in points if p["method"] == "bild" and p["within_budget"]]
    return max(allowed, key=lambda p: p["speedup"]) if allowed else None


def fastest_exact(points: list[dict]) -> dict | None:
    """The exact mode (rb = 0: the large model's output, no quality risk) modelled fastest."""
    exact = [p for p in points if p["method"] == "bild" and p["rb"] == 0 and p["within_budget"]]
    return max(exact, key=lambda p: p["speedup"]) if exact else None


# measured speedups this close are a tie (timing noise), which the exact mode wins
TIE = 0.03


def measured_choice(points: list[dict]) -> dict | None:
    """Among the settings within budget whose speed was measured, the fastest by that
    measurement; the fastest exact-mode setting where it is within TIE of it."""
    measured = [
        p
        for p in points
        if p["method"] == "bild" and p["within_budget"] and "measured_speedup" in p
    ]
    if not measured:
        return None
    best = max(measured, key=lambda p: p["measured_speedup"])
    exact = [p for p in measured if p["rb"] == 0]
    if exact:
        fastest = max(exact, key=lambda p: p["measured_speedup"])
        if fastest["measured_speedup"] >= best["measured_speedup"] * (1 - TIE):
            return fastest
    return best


def tune_results(config, session, points: list[dict], chosen: dict | None, costs: dict) -> dict:
    """What tune.json holds: the configuration, the budget, the pair, the cost model, the
    chosen setting (or the closest one), the advice, the front and every setting."""
    from bild_align import __version__
    from bild_align.measure.timing import environment

    bild = [p for p in points if p["method"] == "bild"]
    small = next(p for p in points if p["method"] == "small")
    return {
        "config": asdict(config),
        "task": config.task,
        "split": config.split,
        "metric": session.metric,
        "examples": len(session.sources),
        "budget": budget_words(config.max_drop, config.min_quality, config.confidence),
        "pair": session.pair,
        "cost_model": {**costs, "timing_rows": config.timing_rows},
        "speedup_reference": "the large model decoded by transformers' generate, as eval "
        "reports it (measured_speedup_same_engine: the large model alone on the lean engine)",
        "chosen": chosen,
        "closest": None if chosen else min(bild, key=lambda p: p["upper_drop"]),
        "advice": advice(small, chosen),
        "front": sorted((p for p in points if p["on_front"]), key=lambda p: p["speedup"]),
        "settings": points,
        "environment": environment(session.device),
        "versions": {"bild_align": __version__},
    }


def settings_on_front(
    judged: dict, speed: dict, done: dict, max_drop: float, min_quality: float | None
) -> list[dict]:
    """Each judged setting (a BiLDPolicy, or "large" / "small") with its modelled speedup, its
    large calls per token, whether it meets the budget and whether it is on the front."""
    points = []
    for key, judgement in judged.items():
        name = key if isinstance(key, str) else setting_key(key)
        counts = done[name]["counts"]
        searched = not isinstance(key, str)
        method = {"method": "bild", **setting_fields(key)} if searched else {"method": key}
        points.append(
            {
                "key": name,
                **method,
                **judgement,
                "speedup": speed[key],
                "large_calls_per_token": counts["large_calls"] / max(1, counts["generated"]),
                "within_budget": budget_met(judgement, max_drop, min_quality),
            }
        )
    on_front = pareto_front([(p["quality"], p["speedup"]) for p in points])
    for point, front in zip(points, on_front, strict=True):
        point["on_front"] = front
    return points


def budget_words(max_drop: float, min_quality: float | None, confidence: float) -> dict:
    if min_quality is not None:
        budget = {"min_quality": min_quality, "words": f"quality >= {min_quality:g}"}
    else:
        budget = {"max_drop": max_drop, "words": f"drop <= {max_drop:g} points"}
    return {**budget, "confidence": confidence}


def advice(small: dict, chosen: dict | None) -> str | None:
    """When BiLD is not the answer: the small model alone, or the large model alone."""
    if small["within_budget"] and (chosen is None or small["speedup"] >= chosen["speedup"]):
        return (
            "the small model alone meets the budget and is faster than every BiLD setting: "
            "use it alone"
        )
    if chosen is not None and chosen["speedup"] <= 1.0:
        return (
            "no BiLD setting within the budget is faster than the large model alone on this "
            "machine: use the large model"
        )
    return None


def plot_front(results: dict, path: Path) -> None:
    """Every setting's quality against its modelled speedup, by rule; the front; the choice."""
    figure, axes = new_plot()
    for rule, colour in (("max_prob", "C0"), ("entropy", "C2"), ("learned", "C4")):
        mine = [p for p in results["settings"] if p.get("rule") == rule]
        axes.scatter(
            [p["speedup"] for p in mine], [p["quality"] for p in mine], c=colour, s=12, label=rule
        )
    front = results["front"]
    axes.plot([p["speedup"] for p in front], [p["quality"] for p in front], "r-", label="front")
    for point in results["settings"]:
        if point["method"] != "bild":
            axes.scatter([point["speedup"]], [point["quality"]], marker="s", c="k")
            axes.annotate(point["method"], (point["speedup"], point["quality"]), fontsize=8)
    if results["chosen"]:
        chosen = results["chosen"]
        axes.scatter(
            [chosen["speedup"]], [chosen["quality"]], marker="*", s=150, c="C3", label="chosen"
        )
    save_plot(
        figure,
        axes,
        path,
        marker=PNG_MARKER,
        x="modelled speedup over the large model's generate (batch 1)",
        y=results["metric"],
        title=f"bild-align tune: {results['budget']['words']}",
    )


def format_summary(results: dict) -> str:
    """A few lines for the terminal: the budget, the front, the choice."""
    lines = [
        f"tune on {results['task']} {results['split']} ({results['examples']} examples), "
        f"budget {results['budget']['words']} at {results['budget']['confidence']:.0%}:",
        f"{'setting':<40} {results['metric']:>8} {'drop':>6} {'bound':>6} {'speedup':>8} "
        f"{'measured':>8} {'calls/tok':>9}",
    ]
    chosen = results["chosen"] or {}
    shown = list(results["front"])
    if chosen and all(point["key"] != chosen["key"] for point in shown):
        # within the budget, yet beaten on both axes by a setting outside it: shown all the same
        shown = sorted([*shown, chosen], key=lambda point: point["speedup"])
    for point in shown:
        measured = point.get("measured_speedup")
        lines.append(
            f"{point['key'] + (' *' if point['key'] == chosen.get('key') else ''):<40} "
            f"{point['quality']:>8.2f} {point['drop']:>+6.2f} {point['upper_drop']:>6.2f} "
            f"{point['speedup']:>7.2f}x "
            f"{'' if measured is None else f'{measured:.2f}x':>8} "
            f"{point['large_calls_per_token']:>9.3f}"
        )
    if chosen:
        lines.append(f"chosen (*): {chosen['key']}")
    if results.get("advice"):
        lines.append(f"advice: {results['advice']}")
    if results.get("saved"):
        lines.append(f"saved to {results['saved']}")
    return "\n".join(lines)
