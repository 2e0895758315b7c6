"""What one `bild-align eval` run does between loading the pair and writing its results: the
methods it times, its output files and their checks, resuming from its partial log, and the
interleaved measurement itself.

    methods = eval_methods(config, small, large, max_new_tokens, vocab_size, fallback_head)
    check_outputs(config, task_file)              # before any work
    done = resume(log, fingerprint, methods, batches)   # examples an interrupted run finished
    measure(methods, encoded, batches, done, tokenizer, prompter, device, log, eos_ids)
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bild_align.configs import EvalConfig
from bild_align.core.decoding import BiLDStats, autoregressive_generate, bild_generate
from bild_align.data.prompts import Prompter
from bild_align.errors import UserError
from bild_align.measure.harness import Method, new_tokens, run_example, warm_up
from bild_align.measure.plots import holds_plot
from bild_align.models.batched_generate import chunked
from bild_align.models.loading import assisted_generation_warnings_hidden, assisted_inputs
from bild_align.pipeline.eval.report import CSV_HEADER, PNG_MARKER
from bild_align.runs.files import check_output_file, holds_json_keys
from bild_align.runs.records import PartialLog, holds_partial_log, partial_path


def eval_methods(
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
                    **(assisted_inputs(model, input_ids) if extra else {}),
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
                fallback_rule=config.fallback_rule,
                fallback_head=fallback_head,
                max_new_tokens=max_new_tokens,
                reference_compat=config.reference_compat,
                vocab_size=vocab_size,
                shared_checks=config.shared_checks,
            )
            return out.sequences, out.stats

        return run

    methods = [Method("large", {}, hf_generate(large))]
    if "engine" in config.baselines:  # the same greedy tokens, on our decoder

        def engine(input_ids, attention_mask):
            out = autoregressive_generate(
                large, input_ids, attention_mask, max_new_tokens=max_new_tokens
            )
            return out.sequences, None

        methods.append(Method("engine", {"decoder": "bild-align"}, engine))
    if "small" in config.baselines:
        methods.append(Method("small", {}, hf_generate(small)))
    if "assisted" in config.baselines and config.batch_size == 1:
        methods.append(
            Method("assisted", {"assistant": "small"}, hf_generate(large, assistant_model=small))
        )
    for rb in config.rollback_threshold:
        for fb in config.fallback_threshold:
            methods.append(Method("bild", {"rb": rb, "fb": fb}, bild(rb, fb), stats=BiLDStats()))
    return methods


def output_paths(config: EvalConfig) -> dict[str, Path]:
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
    paths = output_paths(config)
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
            isinstance(run["error"], str)
            if "error" in run
            else isinstance(run["seconds"], int | float)
            and len(run["outputs"]) == len(ids)
            and isinstance(run["tokens"], int)
            and (run["stats"] is None or BiLDStats(**run["stats"]) is not None)
            for run in runs
        )
    except (KeyError, TypeError):
        return False


def resume(
    log: PartialLog, fingerprint: dict, methods: list[Method], batches: list[list]
) -> tuple[int, int]:
    """Load the batches an interrupted run with the same fingerprint finished, in order and
    each matched by its example ids: their example count, and how many damaged lines were
    skipped (their examples are redone; never the valid lines after them)."""
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
    if len(kept) < len(records):  # resume continues right after the batches kept
        log.rewrite(kept)
    return sum(len(record["ids"]) for record in kept), damaged


def _add_example(methods: list[Method], results: list[dict]) -> None:
    """Add one batch's results (one per method, in order: time, outputs, tokens, stats)."""
    large_outputs = results[0]["outputs"]
    for method, result in zip(methods, results, strict=True):
        if "error" in result:  # failed on this batch or before: it runs no more
            method.error = method.error or result["error"]
            continue
        stats = None if result["stats"] is None else BiLDStats(**result["stats"])
        outputs = result["outputs"]
        identical = sum(a == b for a, b in zip(outputs, large_outputs, strict=True))
        method.add_batch(result["seconds"], outputs, stats, identical, result["tokens"])


def encoded_batches(rows, prompter: Prompter, tokenizer, batch_size: int, max_source_length: int):
    """The inputs, batch by batch: sources, or (decoder-only) prompts, left-padded."""
    texts = prompter.row_inputs(tokenizer, rows, max_source_length)
    return [
        prompter.encode_inputs(tokenizer, batch, max_source_length)
        for batch in chunked(texts, batch_size)
    ]


def measure(
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
        warm_up(methods, first.input_ids, first.attention_mask, tolerate=True)
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
                    tolerate=True,
                )
                record = [
                    {"error": result.error}
                    if result.error is not None
                    else {
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
