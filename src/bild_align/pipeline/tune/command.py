"""`bild-align tune`: the fastest BiLD setting whose quality stays within the user's budget.

    bild-align tune --small S --large L --task gettext-de-en --max-drop 1.0 --save
    results = run_tune(TuneConfig(small="S", large="L", task="gettext-de-en"))
    results["chosen"]          # rule, rb, fb, steps; its quality, drop bounds and speedups

Steps: (1) decode the split with the large model alone and the small model alone, then (2)
every setting of a coarse grid over fallback rule x rb x fb x max_small_steps, in batches
(each row decides exactly as it would alone, so the counts are batch-1's); (3) refine around
the fastest settings within the budget; (4) time a few inputs one at a time (large, small, two
settings, interleaved) and fit each decision's cost (`tuning.fit_costs`), so every setting gets
a modelled speedup from its exact counts; (5) judge quality against the large model on the same
examples by paired bootstrap (`significance`); (6) time the chosen setting and its front
neighbours against the large model. Every decoded setting is appended to OUTPUT.partial.jsonl
as it finishes and kept there: Ctrl-C keeps them, the same command resumes, and a rerun with
another budget judges them again without decoding.
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from bild_align.configs import TuneConfig, check
from bild_align.data.tasks import get_task
from bild_align.errors import UserError
from bild_align.measure.metrics import score_from_statistics, segment_statistics
from bild_align.measure.plots import holds_plot
from bild_align.measure.significance import (
    lower_bound,
    paired_drop,
    resample_weights,
    resampled_scores,
)
from bild_align.models.saved_policy import save_policy
from bild_align.options import command_line
from bild_align.pipeline.tune.report import (
    PNG_MARKER,
    fastest_exact,
    fastest_within_budget,
    measured_choice,
    plot_front,
    settings_on_front,
    tune_results,
)
from bild_align.pipeline.tune.search import (
    coarse_grid,
    refinements,
    setting_of,
)
from bild_align.pipeline.tune.session import TuneSession
from bild_align.reporting import report
from bild_align.runs.files import (
    check_output_file,
    check_writable_folder,
    holds_json_keys,
    write_json_atomic,
)
from bild_align.runs.records import output_lock


def run_tune(config: TuneConfig) -> dict:
    check(config)
    output = Path(config.output).expanduser()
    check_output_file(output)
    if output.suffix != ".json":
        raise UserError(f"--output {config.output}: give a .json file name (a .png goes beside)")
    plot = output.with_suffix(".png")
    if (
        output.is_file()
        and not holds_json_keys(output, {"chosen", "front"})
        or (plot.is_file() and not holds_plot(plot, PNG_MARKER))
    ):
        raise UserError(
            f"--output {config.output}: {output} or {plot} exists and holds something other "
            "than bild-align tune results; choose another --output, or move that file away"
        )
    if config.save and not Path(config.small).expanduser().is_dir():
        raise UserError(
            f"--save writes the chosen policy into the small model's folder, and {config.small} "
            "is not a local folder; download the model (e.g. `hf download`) and tune that folder"
        )
    if config.save:  # before the work, not after it
        check_writable_folder(Path(config.small).expanduser(), "--save (the small model's folder)")
    if config.split == "test":
        report(
            "warning: tuning on the test split: the thresholds are then chosen on the data "
            "they are reported on; tune on validation and report on test",
            stderr=True,
        )
    task = get_task(
        config.task,
        source_column=config.source_column,
        target_column=config.target_column,
        prefix=config.prefix,
    )
    with output_lock("tune", config.output):
        return _run_locked(config, task, output)


def _run_locked(config: TuneConfig, task, output: Path) -> dict:
    session = TuneSession(config, task, output)
    _check_enough_rows(len(session.sources), config.max_samples)
    if session.done:
        report(f"resuming: {len(session.done)} decodings already done ({session.log.path})")
    if session.metric != task.metric:
        report(
            f"note: some rows of {config.task} have no reference; quality is BLEU against the "
            "large model's outputs (agreement), the large model scoring 100",
            stderr=True,
        )
    try:
        judged, speed, costs = _search(config, session, task)
    except KeyboardInterrupt:
        report(
            f"\ninterrupted: {len(session.done)} finished decodings are kept in "
            f"{session.log.path}; run the same command again to finish",
            stderr=True,
        )
        raise
    points = settings_on_front(judged, speed, session.done, config.max_drop, config.min_quality)
    chosen = fastest_within_budget(points)
    if chosen is not None:  # measured: it, its neighbours on the front, the fastest exact mode
        exact = fastest_exact(points)
        session.measure_speedups(chosen, points, also=[exact] if exact else [])
        chosen = measured_choice(points) or chosen
    results = tune_results(config, session, points, chosen, costs)
    write_json_atomic(output, results)
    plot_front(results, output.with_suffix(".png"))
    # the decodings stay in the log: a rerun with another budget judges them without decoding
    if chosen is None:
        closest = results["closest"]
        raise UserError(
            f"no setting meets the budget ({results['budget']['words']}); the closest is "
            f"{closest['key']} (drop {closest['drop']:+.2f}, upper bound "
            f"{closest['upper_drop']:.2f}); the front is in {output}"
        )
    if config.save:
        results["saved"] = str(_save(config, session, results, chosen))
        write_json_atomic(output, results)
    return results


def _search(config: TuneConfig, session: TuneSession, task) -> tuple[dict, dict, dict]:
    """Decode the large and small models and the coarse grid, fit the cost model, then refine
    around the fastest settings within the budget: each setting's judgement (quality, drop and
    their bounds), its modelled speedup, and the cost model."""
    rows = len(session.sources)
    weights = resample_weights(rows, config.bootstrap, config.seed)
    grid = coarse_grid(
        session.rules,
        config.rollback_threshold,
        config.fallback_threshold,
        config.max_small_steps,
        session.head,
    )
    with tqdm(total=rows * (2 + len(grid)), desc="tune", unit="row") as progress:
        large = session.decoded("large", progress)
        own = session.references if session.metric == task.metric else None
        references = own or large["outputs"]  # without references: agreement with the large

        def stats_of(record):
            return segment_statistics(session.metric, record["outputs"], references)

        large_stats = stats_of(large)
        large_scores = resampled_scores(session.metric, large_stats, weights)

        def judge(record) -> dict:
            stats = stats_of(record)
            drop = paired_drop(
                session.metric, large_stats, stats, weights, config.confidence, large_scores
            )
            return {
                "quality": _score(session.metric, stats),
                "drop": drop["drop"],
                "upper_drop": drop["upper"],
                "lower_quality": lower_bound(session.metric, stats, weights, config.confidence),
            }

        judged = {"large": judge(large), "small": judge(session.decoded("small", progress))}
        for setting in grid:
            judged[setting] = judge(session.decoded(setting, progress))
        costs = session.fit_cost_model(grid)
        speed = {key: session.speedup(key, costs) for key in judged}
        for _ in range(config.refine):
            fresh = refinements(judged, speed, config.max_drop, config.min_quality)
            if not fresh:
                break
            progress.total += rows * len(fresh)
            for setting in fresh:
                judged[setting] = judge(session.decoded(setting, progress))
                speed[setting] = session.speedup(setting, costs)
    return judged, speed, costs


def _save(config: TuneConfig, session: TuneSession, results: dict, chosen: dict) -> Path:
    """Write the chosen setting beside the small model, with what it was tuned on."""
    tuned = {k: results[k] for k in ("task", "split", "examples", "budget", "metric")}
    tuned.update({k: chosen[k] for k in ("quality", "drop", "upper_drop", "speedup")})
    tuned["measured_speedup"] = chosen.get("measured_speedup")
    tuned["command"] = command_line("tune", config)
    policy = setting_of(chosen, session.head)
    return save_policy(config.small, policy, pair=session.pair, tuned=tuned)


# fewer rows cannot bound a quality drop: a paired bootstrap over them is its point estimate
MIN_ROWS = 10
FEW_ROWS = 100


def _check_enough_rows(rows: int, max_samples: int | None) -> None:
    if rows < MIN_ROWS:
        raise UserError(
            f"tune needs at least {MIN_ROWS} rows to bound a quality drop, and the split has "
            f"{rows}{' (--max-samples)' if max_samples else ''}; give more rows (a few hundred "
            "give bounds within about a point)"
        )
    if rows < FEW_ROWS:
        report(
            f"warning: {rows} rows give wide bounds on the quality drop: a budget is met only "
            f"by settings close to exact; a few hundred rows (or more) bound it within about "
            "a point",
            stderr=True,
        )


def _score(metric: str, stats) -> float:
    return score_from_statistics(metric, stats.sum(0))
