"""Stage three: measure a pair the way the paper does, beside the baselines, and sweep thresholds.

    bild-align eval --small S --large L --task iwslt2017-de-en --rb 2 --fb 0.6
    bild-align eval ... --sweep --rb 1,2,3,5 --fb 0.3,0.5,0.7,0.9
    bild-align eval ... --batch-size 8      # throughput: 8 inputs per call for every method

    results = run_eval(EvalConfig(small="S", large="L", task="iwslt2017-de-en"))

Every method runs on the same examples in this process, one input (or one batch of
`--batch-size` inputs, padded together) at a time, after a warm-up,
interleaved per example so that machine drift hits all alike, with the device synchronised and
only generation timed. The large model always runs (it is the reference for speed and for
exactness); BiLD runs at every (rb, fb) setting asked for, so a sweep generates the large
model's outputs once. Results (quality with its signature, latency, speedup, decoder
statistics, the outputs, and the full configuration) go to a JSON file; a sweep adds a CSV, the
Pareto front and a PNG plot.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bild_align.configs import EvalConfig, check
from bild_align.core.decoding import eos_token_ids
from bild_align.data.prompts import Prompter
from bild_align.data.tasks import get_task, load_rows
from bild_align.measure.timing import environment
from bild_align.models.batched_generate import chunked
from bild_align.models.fallback_heads import load_fallback_head
from bild_align.models.loading import fit_lengths, load_pair, resolve_device, use_plain_generation
from bild_align.models.saved_policy import policy_path, saved_policy_for
from bild_align.pipeline.eval.report import failed_methods, method_rows, sweep_report
from bild_align.pipeline.eval.runs import (
    check_outputs,
    encoded_batches,
    eval_methods,
    measure,
    output_paths,
    resume,
)
from bild_align.reporting import report
from bild_align.runs.files import (
    write_json_atomic,
)
from bild_align.runs.records import PartialLog, output_lock


def _absolute_if_local(name: str) -> str:
    """A local model folder as an absolute path (results name both models alike)."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def run_eval(config: EvalConfig) -> dict:
    check(config)
    config = replace(
        config, small=_absolute_if_local(config.small), large=_absolute_if_local(config.large)
    )
    task = get_task(
        config.task,
        source_column=config.source_column,
        target_column=config.target_column,
        prefix=config.prefix,
    )
    check_outputs(config, task.local_path)
    with output_lock("eval", config.output):
        return _run_locked(config, task)


def _with_saved_policy(config: EvalConfig, large_revision: str, vocab_size: int) -> EvalConfig:
    """The config with the small model's saved policy for this pair, if it has one."""
    saved = saved_policy_for(config.small, large_revision, vocab_size)
    if saved is None:
        return config
    policy, record = saved
    report(
        f"bild-align: using the tuned policy in {policy_path(config.small)} (tuned on "
        f"{record['tuned'].get('task')} {record['tuned'].get('split')}): "
        f"rb={policy.rollback_threshold:g} fb={policy.fallback_threshold:g} "
        f"max_small_steps={policy.max_small_steps} fallback={policy.fallback_rule}",
        stderr=True,
    )
    return replace(
        config,
        rollback_threshold=(policy.rollback_threshold,),
        fallback_threshold=(policy.fallback_threshold,),
        max_small_steps=policy.max_small_steps,
        fallback_rule=policy.fallback_rule,
    )


@dataclass
class _Setup:
    """What an eval run decodes with, made before any file is written."""

    config: EvalConfig  # with the saved policy's thresholds when it uses one
    rows: object
    device: str
    tokenizer: object
    prompter: Prompter
    methods: list
    settings: dict  # the run's identity beside the config (revisions, lengths, sample ids)
    encoded: list
    batches: list
    eos_ids: object


def _run_locked(config: EvalConfig, task) -> dict:
    setup = _set_up(config, task)
    config = setup.config
    log = PartialLog(config.output, "the finished examples of an interrupted eval")
    fingerprint = {
        **{key: value for key, value in asdict(config).items() if key != "output"},
        **setup.settings,
    }
    done, damaged = resume(log, fingerprint, setup.methods, setup.batches)
    _say_before_measuring(config, setup, task, log, done, damaged)
    try:
        measure(
            setup.methods,
            setup.encoded,
            setup.batches,
            done,
            setup.tokenizer,
            setup.prompter,
            setup.device,
            log,
            setup.eos_ids,
        )
    except KeyboardInterrupt:
        report(
            f"\ninterrupted: {len(setup.methods[0].outputs)} of {len(setup.rows)} examples are "
            f"kept in {log.path}; run the same command again to finish",
            stderr=True,
        )
        raise
    results = _results(setup, task, done)
    write_json_atomic(config.output, results)
    log.finish()
    return results


def _set_up(config: EvalConfig, task) -> _Setup:
    """Load the rows and the pair, fit the lengths, make the methods and encode the batches;
    a prompt that cannot fit is refused here, before the partial log is opened."""
    rows = load_rows(task, config.split, config.max_samples)
    device = resolve_device(config.device)
    pair = load_pair(config.small, config.large, dtype=config.dtype, device=device)
    small, large, tokenizer = pair.small, pair.large, pair.tokenizer
    prompter = Prompter.for_model(large, task, config.prompt_template, config.chat_template)
    prompter.check_tokenizer(tokenizer)
    if config.saved_policy and not config.sweep:
        config = _with_saved_policy(config, pair.large_revision, pair.vocab_size)
    max_source_length, max_new_tokens = fit_lengths(
        {config.large: large, config.small: small},
        config.max_source_length,
        config.max_new_tokens,
        defaults=(task.max_source_length, task.max_target_length),
    )
    if config.max_source_length is None:  # a default leaves room for the prompt and output
        max_source_length = prompter.source_room(
            tokenizer, large, max_source_length, max_new_tokens
        )
    generation = use_plain_generation(large)  # every method decodes with the same settings
    use_plain_generation(small)
    head = None
    if config.fallback_rule == "learned":
        head = load_fallback_head(config.small, pair.small_revision)
    references = list(rows["reference"])
    settings = {
        "small_revision": pair.small_revision,
        "large_revision": pair.large_revision,
        "task_source": task.source,
        "metric": task.metric,
        "prefix": task.prefix,
        "max_new_tokens": max_new_tokens,
        "max_source_length": max_source_length,
        "sample_ids": list(rows["id"]),
        "rows_without_reference": sum(not reference for reference in references),
        "generation": generation,
        **(prompter.describe() if prompter.decoder_only else {}),
    }
    encoded = encoded_batches(rows, prompter, tokenizer, config.batch_size, max_source_length)
    prompter.check_fits(large, max(batch.input_ids.shape[1] for batch in encoded), max_new_tokens)
    return _Setup(
        config=config,
        rows=rows,
        device=device,
        tokenizer=tokenizer,
        prompter=prompter,
        methods=eval_methods(config, small, large, max_new_tokens, pair.vocab_size, head),
        settings=settings,
        encoded=encoded,
        batches=list(chunked(settings["sample_ids"], config.batch_size)),
        eos_ids=eos_token_ids(large),
    )


def _say_before_measuring(config: EvalConfig, setup: _Setup, task, log, done, damaged) -> None:
    if damaged:
        report(
            f"note: {damaged} damaged line(s) in {log.path} were skipped; their examples "
            "are decoded again",
            stderr=True,
        )
    if done:
        report(f"resuming: {done} of {len(setup.rows)} examples already done ({log.path})")
    missing, rows = setup.settings["rows_without_reference"], len(setup.rows)
    if 0 < missing < rows:
        report(
            f"note: {missing} of {rows} rows have no reference; the {task.metric} score leaves "
            "them out",
            stderr=True,
        )
    if config.batch_size > 1 and "assisted" in config.baselines:
        report(
            "note: the assisted baseline is left out: transformers' assisted generation "
            "decodes one input at a time",
            stderr=True,
        )


def _results(setup: _Setup, task, done: int) -> dict:
    """The results file's content: the configuration, the environment, every method's row,
    the failed methods, and a sweep's report (its CSV and plot written beside)."""
    config, methods = setup.config, setup.methods
    results = {
        "config": {**asdict(config), **setup.settings, "resumed_after": done or None},
        "environment": environment(setup.device),
        "methods": method_rows(methods, list(setup.rows["reference"]), task.metric),
    }
    failed = failed_methods(methods)
    if failed:  # reported, and the command's exit code says so
        results["failed_methods"] = failed
    if config.sweep:
        paths = output_paths(config)
        results["sweep"] = sweep_report(
            results, paths["sweep CSV"], paths["sweep plot"], config.max_drop
        )
    return results
