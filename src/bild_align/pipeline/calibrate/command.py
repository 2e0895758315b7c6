"""Stage one: decode a benchmark's inputs with the large model into a calibration dataset.

    bild-align calibrate --large kssteven/mT5-large-iwslt2017-de-en --task iwslt2017-de-en \\
        --split train --output calib/iwslt [--push-to-hub user/iwslt-calibration]

    run_calibration(CalibrateConfig(large="...", task="iwslt2017-de-en", output="calib/iwslt"))

Output (DESIGN.md section 6): `OUTPUT/data/<split>-00000-of-00001.parquet` with columns index,
id, source, target (the large model's output) and reference, plus `OUTPUT/README.md`, a dataset
card whose YAML records the model, its revision, the generation settings, the benchmark and
the row count; `datasets.load_dataset(OUTPUT)` reads it. While running, finished rows go to
`OUTPUT/.shards/` in atomically written shards, so an interrupted run continues where it
stopped when the same command is run again. Under `accelerate launch` the inputs are split
across processes and the main process merges the shards into one dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

import bild_align
from bild_align.configs import CalibrateConfig
from bild_align.data.prompts import Prompter
from bild_align.data.tasks import Task, get_task, load_rows
from bild_align.models.batched_generate import chunked, greedy_texts, length_sorted
from bild_align.models.loading import fit_lengths, load_seq2seq_or_causal, use_plain_generation
from bild_align.pipeline.calibrate.runs import (
    SHARDS,
    check_output_folder,
    check_same_run,
    claim_output,
    data_complete,
    data_file,
    finalize,
    read_run,
    rows_digest,
    run_fingerprint,
    run_lock,
)
from bild_align.reporting import report
from bild_align.runs.hub import check_hub_access, upload
from bild_align.runs.shards import ShardStore


def default_output(task: Task) -> Path:
    """calibration/TASK: the folder the shipped recipes read (recipes/iwslt.yaml, ...)."""
    return Path("calibration") / task.name


def _push_later(repo_id: str, output: Path) -> str:
    return f"hf upload {repo_id} {output} --repo-type dataset"


@dataclass
class _Run:
    """What a calibration decodes, made before anything is written."""

    config: CalibrateConfig  # with the output folder and the fitted lengths
    output: Path
    rows: object
    model: object
    tokenizer: object
    prompter: Prompter
    inputs: list
    lengths: list
    fingerprint: dict  # the run's identity, recorded in run.json
    generation: dict


def run_calibration(config: CalibrateConfig) -> Path:
    import torch
    from accelerate import PartialState

    # cpu=True lets several CPU processes (torchrun, or ACCELERATE_USE_CPU) form one group
    state = PartialState(cpu=config.device == "cpu" or not torch.cuda.is_available())
    task = get_task(
        config.task,
        source_column=config.source_column,
        target_column=config.target_column,
        prefix=config.prefix,
    )
    output = Path(config.output).expanduser() if config.output else default_output(task)
    check_output_folder(output, config.overwrite)
    run_lock(output).probe()
    hub = None
    if config.push_to_hub:
        later = "calibrate without --push-to-hub and push later with `hf upload`"
        hub = check_hub_access(config.push_to_hub, config.private, repo_type="dataset", later=later)
    run = _set_up(config, task, output, state.device if state.num_processes > 1 else None)
    if not config.overwrite:  # before anything is written: a refused start leaves the output
        check_same_run(output, run.fingerprint)
    state.wait_for_everyone()
    lock = run_lock(output)
    if state.is_main_process:
        lock.acquire()
        claim_output(output, run.fingerprint, config.overwrite)
    state.wait_for_everyone()
    try:
        _decode_unless_complete(run, state)
    finally:
        lock.release()
    if hub is not None and state.is_main_process:
        url = upload(
            hub,
            output,
            config.push_to_hub,
            repo_type="dataset",
            later=_push_later(config.push_to_hub, output),
            allow_patterns=["README.md", "data/*"],
        )
        report(f"pushed to {url}")
    return output


def _set_up(config: CalibrateConfig, task: Task, output: Path, device) -> _Run:
    """Load the rows and the large model (on `device` when processes split the work), fit the
    lengths and check that every prompt fits."""
    rows = load_rows(task, config.split, config.max_samples)
    model, tokenizer, revision = load_seq2seq_or_causal(
        config.large, dtype=config.dtype, device=device or config.device
    )
    prompter = Prompter.for_model(model, task, config.prompt_template, config.chat_template)
    prompter.check_tokenizer(tokenizer)
    max_source_length, max_new_tokens = fit_lengths(
        {config.large: model},
        config.max_source_length,
        config.max_new_tokens,
        defaults=(task.max_source_length, task.max_target_length),
    )
    if config.max_source_length is None:  # a default leaves room for the prompt and output
        max_source_length = prompter.source_room(
            tokenizer, model, max_source_length, max_new_tokens
        )
    config = replace(
        config,
        output=str(output),
        max_source_length=max_source_length,
        max_new_tokens=max_new_tokens,
    )
    generation = use_plain_generation(model)
    inputs = prompter.row_inputs(tokenizer, rows, config.max_source_length)
    lengths = prompter.input_lengths(tokenizer, inputs, config.max_source_length)
    prompter.check_fits(model, max(lengths), config.max_new_tokens)  # decoder-only context
    fingerprint = run_fingerprint(config, task, revision, rows_digest(rows))
    if prompter.decoder_only:  # (absent for encoder-decoder runs, whose records predate it)
        fingerprint.update(prompter.describe())
    return _Run(
        config, output, rows, model, tokenizer, prompter, inputs, lengths, fingerprint, generation
    )


def _decode_unless_complete(run: _Run, state) -> None:
    """Decode the rows no shard holds yet and merge the shards into the dataset, unless the
    folder already holds this complete run."""
    config, output, rows = run.config, run.output, run.rows
    recorded = read_run(output)
    if recorded.get("complete") and data_complete(output, config.split, len(rows)):
        if state.is_main_process:
            report(f"{output} already holds this complete run ({recorded.get('rows')} rows)")
        return
    if recorded.get("complete") and state.is_main_process:
        report(
            f"{data_file(output, config.split)} is missing or damaged; decoding its "
            f"{len(rows)} rows again",
            stderr=True,
        )
    try:
        _decode_missing(run, state)
    except KeyboardInterrupt:  # its finished rows are in the shards by now
        if state.is_main_process:
            kept = len(ShardStore(output / SHARDS).done_ids())
            report(
                f"\ninterrupted: {kept} of {len(rows)} rows are kept in {output / SHARDS}; run "
                "the same command again to finish",
                stderr=True,
            )
        raise
    state.wait_for_everyone()
    if state.is_main_process:
        meta = {
            **run.fingerprint,
            "generation": {**run.generation, "max_new_tokens": config.max_new_tokens},
            "bild_align_version": bild_align.__version__,
        }
        finalize(output, ShardStore(output / SHARDS), len(rows), meta)
    state.wait_for_everyone()


def _decode_missing(run: _Run, state) -> None:
    """Decode this process's share of the rows no shard holds yet, in length-sorted batches;
    finished rows go to shards of `shard_rows` (what is buffered, on any way out)."""
    config, rows, output = run.config, run.rows, run.output
    inputs, model, tokenizer, prompter = run.inputs, run.model, run.tokenizer, run.prompter
    lengths = run.lengths
    store = ShardStore(output / SHARDS)
    done = store.done_ids()
    sources, ids, references = (list(rows[name]) for name in ("source", "id", "reference"))
    order = [index for index in length_sorted(lengths) if ids[index] not in done]
    mine = order[state.process_index :: state.num_processes]
    if done and state.is_main_process:
        report(f"resuming: {len(done)} of {len(rows)} rows kept from the interrupted run")
    buffer: list[dict] = []
    with tqdm(
        total=len(order),
        desc="calibrate",
        unit="row",
        disable=not state.is_main_process,
        dynamic_ncols=True,
    ) as progress:
        try:
            for batch in chunked(mine, config.batch_size):
                texts = greedy_texts(
                    model,
                    tokenizer,
                    [inputs[i] for i in batch],
                    config.max_source_length,
                    config.max_new_tokens,
                    prompter,
                )
                for index, text in zip(batch, texts, strict=True):
                    row = {
                        "index": index,
                        "id": ids[index],
                        "source": sources[index],
                        "target": text,
                        "reference": references[index],
                    }
                    if prompter.decoder_only:
                        row["prompt"] = inputs[index]
                    buffer.append(row)
                if len(buffer) >= config.shard_rows:
                    store.write(buffer, tag=f"rank{state.process_index}")
                    buffer = []
                # other processes advance at the same pace: show the whole run's progress
                progress.update(len(batch) * state.num_processes)
        finally:
            store.write(buffer, tag=f"rank{state.process_index}")  # keep finished rows
        progress.n = min(progress.n, progress.total)
