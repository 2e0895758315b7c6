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

from dataclasses import asdict, replace
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
        rb=(policy.rollback_threshold,),
        fb=(policy.fallback_threshold,),
        max_small_steps=policy.max_small_steps,
        fallback=policy.fallback_rule,
    )


def _run_locked(config: EvalConfig, task) -> dict:
    rows = load_rows(task, config.split, config.max_samples)
    device = resolve_device(config.device)
    pair = load_pair(config.small, config.large, dtype=config.dtype, device=device)
    small, large, tokenizer, vocab_size = pair.small, pair.large, pair.tokenizer, pair.vocab_size
    small_revision, large_revision = pair.small_revision, pair.large_revision
    prompter = Prompter.for_model(large, task, config.prompt_template, config.chat_template)
    prompter.check_tokenizer(tokenizer)
    if config.saved_policy and not config.sweep:
        config = _with_saved_policy(config, large_revision, vocab_size)
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
    if config.fallback == "learned":
        head = load_fallback_head(config.small, small_revision)
    methods = eval_methods(config, small, large, max_new_tokens, vocab_size, head)
    references = list(rows["reference"])
    settings = {
        "small_revision": small_revision,
        "large_revision": large_revision,
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
    fingerprint = {
        **{key: value for key, value in asdict(config).items() if key != "output"},
        **settings,
    }
    encoded = encoded_batches(rows, prompter, tokenizer, config.batch_size, max_source_length)
    prompter.check_fits(large, max(batch.input_ids.shape[1] for batch in encoded), max_new_tokens)
    log = PartialLog(config.output, "the finished examples of an interrupted eval")
    batches = list(chunked(settings["sample_ids"], config.batch_size))
    done, damaged = resume(log, fingerprint, methods, batches)
    if damaged:
        report(
            f"note: {damaged} damaged line(s) in {log.path} were skipped; their examples "
            "are decoded again",
            stderr=True,
        )
    if done:
        report(f"resuming: {done} of {len(rows)} examples already done ({log.path})")
    missing = settings["rows_without_reference"]
    if 0 < missing < len(references):
        report(
            f"note: {missing} of {len(references)} rows have no reference; the "
            f"{task.metric} score leaves them out",
            stderr=True,
        )

    if config.batch_size > 1 and "assisted" in config.baselines:
        report(
            "note: the assisted baseline is left out: transformers' assisted generation "
            "decodes one input at a time",
            stderr=True,
        )
    sources = list(rows["source"])
    try:
        measure(
            methods,
            encoded,
            batches,
            done,
            tokenizer,
            prompter,
            device,
            log,
            eos_token_ids(large),
        )
    except KeyboardInterrupt:
        kept = len(methods[0].outputs)
        report(
            f"\ninterrupted: {kept} of {len(sources)} examples are kept in {log.path}; run the "
            "same command again to finish",
            stderr=True,
        )
        raise

    results = {
        "config": {**asdict(config), **settings, "resumed_after": done or None},
        "environment": environment(device),
        "methods": method_rows(methods, references, task.metric),
    }
    failed = failed_methods(methods)
    if failed:  # reported, and the command's exit code says so
        results["failed_methods"] = failed
    if config.sweep:
        paths = output_paths(config)
        results["sweep"] = sweep_report(
            results, paths["sweep CSV"], paths["sweep plot"], config.max_drop
        )
    write_json_atomic(config.output, results)
    log.finish()
    return results
