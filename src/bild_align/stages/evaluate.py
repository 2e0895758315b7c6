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

import contextlib
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bild_align.configs import EvalConfig, check
from bild_align.core.decoding import BiLDStats, bild_generate, eos_token_ids
from bild_align.errors import UserError
from bild_align.eval_report import (
    CSV_HEADER,
    PNG_MARKER,
    method_rows,
    sweep_report,
)
from bild_align.fallback_heads import load_fallback_head
from bild_align.greedy import chunked
from bild_align.harness import Method, new_tokens, run_example, warm_up
from bild_align.io_utils import (
    check_output_file,
    holds_json_keys,
    write_json_atomic,
)
from bild_align.models import (
    assisted_generation_warnings_hidden,
    check_loaded_pair,
    fit_lengths,
    load_seq2seq_or_causal,
    resolve_device,
    use_plain_generation,
)
from bild_align.plots import holds_plot
from bild_align.prompts import Prompter
from bild_align.runs import PartialLog, holds_partial_log, output_lock, partial_path
from bild_align.saved_policy import policy_path, saved_policy_for
from bild_align.tasks import get_task, load_rows
from bild_align.timing import environment


def _methods(
    config: EvalConfig, small, large, max_new_tokens: int, vocab_size: int, fallback_head=None
) -> list[Method]:
    def hf_generate(model, **extra):
        quiet = assisted_generation_warnings_hidden if extra else contextlib.nullcontext

        def run(input_ids, attention_mask):
            with quiet():
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
                fallback_rule=config.fallback,
                fallback_head=fallback_head,
                max_new_tokens=max_new_tokens,
                reference_compat=config.reference_compat,
                vocab_size=vocab_size,
                shared_checks=config.shared_checks,
            )
            return out.sequences, out.stats

        return run

    methods = [Method("large", {}, hf_generate(large))]
    if "small" in config.baselines:
        methods.append(Method("small", {}, hf_generate(small)))
    if "assisted" in config.baselines and config.batch_size == 1:
        methods.append(
            Method("assisted", {"assistant": "small"}, hf_generate(large, assistant_model=small))
        )
    for rb in config.rb:
        for fb in config.fb:
            methods.append(Method("bild", {"rb": rb, "fb": fb}, bild(rb, fb), stats=BiLDStats()))
    return methods


def _output_paths(config: EvalConfig) -> dict[str, Path]:
    """Every file this run writes, by what it holds."""
    base = Path(config.output).expanduser()
    paths = {"results JSON": base, "partial results": partial_path(base)}
    if config.sweep:
        paths.update(
            {"sweep CSV": base.with_suffix(".csv"), "sweep plot": base.with_suffix(".png")}
        )
    return paths


def _holds_ours(kind: str, path: Path) -> bool:
    """Whether the existing file `path` holds this tool's output of `kind` (it may be replaced)."""
    if kind == "results JSON":
        return holds_json_keys(path, {"config", "methods"})
    try:
        if kind == "partial results":
            return holds_partial_log(path)
        data = path.read_bytes()
        if kind == "sweep CSV":
            return data.decode("utf-8").split("\n", 1)[0].strip() == ",".join(CSV_HEADER)
        return holds_plot(path, PNG_MARKER)
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        return False


def check_outputs(config: EvalConfig, task_file: str | None) -> None:
    """Before any work: every file the run writes can be written, is not the input data, is
    not another of its outputs, and holds nothing but this tool's results of the same kind."""
    paths = _output_paths(config)
    seen: dict[Path, str] = {}
    for kind, path in paths.items():
        if kind != "partial results":
            check_output_file(path)
        resolved = path.resolve()
        if task_file is not None and resolved == Path(task_file).expanduser().resolve():
            raise UserError(
                f"--output {config.output}: its {kind} would be written to {path}, the task's "
                "input data; choose another --output"
            )
        if resolved in seen:
            raise UserError(
                f"--output {config.output}: the {seen[resolved]} and the {kind} would both be "
                f"written to {path}; give --output a .json name"
            )
        seen[resolved] = kind
        if path.is_file() and not _holds_ours(kind, path):
            raise UserError(
                f"--output {config.output}: {path} exists and holds something other than "
                f"bild-align's {kind}; choose another --output, or move that file away"
            )


def _valid_record(record, methods: list[Method]) -> bool:
    """A finished batch as `_measure` writes it: its ids, and one run per method."""
    try:
        runs, ids = record["runs"], record["ids"]
        return len(runs) == len(methods) and all(
            isinstance(run["seconds"], int | float)
            and len(run["outputs"]) == len(ids)
            and isinstance(run["tokens"], int)
            and (run["stats"] is None or BiLDStats(**run["stats"]) is not None)
            for run in runs
        )
    except (KeyError, TypeError):
        return False


def _resume(log: PartialLog, fingerprint: dict, methods: list[Method], batches: list[list]) -> int:
    """Load the batches an interrupted run with the same fingerprint finished, in order and
    each matched by its example ids; their example count. Lines that cannot be read are
    skipped (their examples are redone), never the valid lines after them."""
    records, unreadable = log.open(fingerprint)
    valid = [record for record in records if _valid_record(record, methods)]
    damaged = unreadable + len(records) - len(valid)
    by_ids = {}
    for record in valid:
        by_ids.setdefault(tuple(record["ids"]), record)
    kept = []
    for batch in batches:
        record = by_ids.get(tuple(batch))
        if record is None:
            break
        kept.append(record)
        _add_example(methods, record["runs"])
    if damaged:
        print(
            f"note: {damaged} damaged line(s) in {log.path} were skipped; their examples "
            "are decoded again",
            file=sys.stderr,
        )
    if records:
        log.rewrite(kept)
    return sum(len(record["ids"]) for record in kept)


def _add_example(methods: list[Method], results: list[dict]) -> None:
    """Add one batch's results (one per method, in order: time, outputs, tokens, stats)."""
    large_outputs = results[0]["outputs"]
    for method, result in zip(methods, results, strict=True):
        stats = None if result["stats"] is None else BiLDStats(**result["stats"])
        outputs = result["outputs"]
        identical = sum(a == b for a, b in zip(outputs, large_outputs, strict=True))
        method.add_batch(result["seconds"], outputs, stats, identical, result["tokens"])


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
    folder = Path(config.output).expanduser().parent
    new_folder = not folder.exists()
    lock = output_lock("eval", config.output).acquire()
    try:
        return _run_locked(config, task)
    finally:
        lock.path.unlink(missing_ok=True)  # while still held: no other run can hold it now
        lock.release()
        if new_folder:  # a failed start leaves no empty results folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def _with_saved_policy(config: EvalConfig, large_revision: str, vocab_size: int) -> EvalConfig:
    """The config with the small model's saved policy for this pair, if it has one."""
    saved = saved_policy_for(config.small, large_revision, vocab_size)
    if saved is None:
        return config
    policy, record = saved
    print(
        f"bild-align: using the tuned policy in {policy_path(config.small)} (tuned on "
        f"{record['tuned'].get('task')} {record['tuned'].get('split')}): "
        f"rb={policy.rollback_threshold:g} fb={policy.fallback_threshold:g} "
        f"max_small_steps={policy.max_small_steps} fallback={policy.fallback_rule}",
        file=sys.stderr,
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
    large, tokenizer, large_revision = load_seq2seq_or_causal(
        config.large, dtype=config.dtype, device=device
    )
    small, small_tokenizer, small_revision = load_seq2seq_or_causal(
        config.small, dtype=config.dtype, device=device
    )
    vocab_size = check_loaded_pair(small, small_tokenizer, large, tokenizer)
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
    generation = use_plain_generation(large)  # every method decodes with the same settings
    use_plain_generation(small)
    head = None
    if config.fallback == "learned":
        head = load_fallback_head(config.small, small_revision)
    methods = _methods(config, small, large, max_new_tokens, vocab_size, head)
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
    log = PartialLog(config.output, "the finished examples of an interrupted eval")
    batches = list(chunked(settings["sample_ids"], config.batch_size))
    done = _resume(log, fingerprint, methods, batches)
    if done:
        print(f"resuming: {done} of {len(rows)} examples already done ({log.path})")
    missing = settings["rows_without_reference"]
    if 0 < missing < len(references):
        print(
            f"note: {missing} of {len(references)} rows have no reference; the "
            f"{task.metric} score leaves them out",
            file=sys.stderr,
        )

    if config.batch_size > 1 and "assisted" in config.baselines:
        print(
            "note: the assisted baseline is left out: transformers' assisted generation "
            "decodes one input at a time",
            file=sys.stderr,
        )
    sources = list(rows["source"])
    encoded = _encoded(rows, prompter, tokenizer, config.batch_size, max_source_length)
    prompter.check_fits(large, max(batch.input_ids.shape[1] for batch in encoded), max_new_tokens)
    try:
        _measure(
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
        print(
            f"\ninterrupted: {kept} of {len(sources)} examples are kept in {log.path}; run the "
            "same command again to finish",
            file=sys.stderr,
        )
        raise

    results = {
        "config": {**asdict(config), **settings, "resumed_after": done or None},
        "environment": environment(device),
        "methods": method_rows(methods, references, task.metric),
    }
    if config.sweep:
        paths = _output_paths(config)
        results["sweep"] = sweep_report(
            results, paths["sweep CSV"], paths["sweep plot"], config.max_drop
        )
    write_json_atomic(config.output, results)
    log.finish()
    return results


def _encoded(rows, prompter: Prompter, tokenizer, batch_size: int, max_source_length: int):
    """The inputs, batch by batch: sources, or (decoder-only) prompts, left-padded."""
    texts = prompter.row_inputs(tokenizer, rows, max_source_length)
    return [
        prompter.encode_inputs(tokenizer, batch, max_source_length)
        for batch in chunked(texts, batch_size)
    ]


def _measure(
    methods: list[Method],
    encoded: list,
    batches: list[list[str]],
    done: int,
    tokenizer,
    prompter: Prompter,
    device,
    log: PartialLog,
    eos_ids,
) -> None:
    """Time every method on every batch (of one or more examples) not yet done, interleaved;
    append each finished batch to the log as soon as all its methods are done."""
    with torch.inference_mode():
        first = encoded[0].to(device)
        warm_up(methods, first.input_ids, first.attention_mask)
        total = len(encoded) * len(methods)
        batch_size = len(first.input_ids)
        finished = done // batch_size  # a resumed run stopped after a whole batch
        with tqdm(
            total=total, initial=finished * len(methods), desc="eval", unit="run"
        ) as progress:
            for batch, ids in zip(encoded[finished:], batches[finished:], strict=True):
                batch = batch.to(device)
                results = run_example(
                    methods,
                    batch.input_ids,
                    batch.attention_mask,
                    device,
                    on_done=lambda method: progress.update(1),
                )
                record = [
                    {
                        "seconds": result.seconds,
                        "outputs": prompter.completions(
                            tokenizer, result.sequences, batch.input_ids
                        ),
                        "tokens": new_tokens(
                            result.sequences,
                            eos_ids,
                            prefix_length=prompter.prefix_length(batch.input_ids),
                        ),
                        "stats": None if result.stats is None else asdict(result.stats),
                    }
                    for result in results
                ]
                _add_example(methods, record)
                log.append({"ids": ids, "runs": record})
