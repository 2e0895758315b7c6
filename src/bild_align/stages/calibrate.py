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

import contextlib
import hashlib
import sys
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

import bild_align
from bild_align.configs import CalibrateConfig
from bild_align.errors import OtherRunError, UserError
from bild_align.greedy import chunked, greedy_texts, length_sorted, token_lengths
from bild_align.hub import check_hub_access, upload
from bild_align.io_utils import (
    check_writable_folder,
    differing_keys,
    read_json_file,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from bild_align.models import fit_lengths, load_seq2seq_or_causal, use_plain_generation
from bild_align.prompts import Prompter
from bild_align.runs import RunLock
from bild_align.shards import ShardStore
from bild_align.tasks import Task, get_task, load_rows

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
SHARDS = ".shards"


def rows_digest(rows) -> str:
    """A digest of the rows' ids, sources and references: a resumed run must read the same
    inputs, not merely the same file name."""
    digest = hashlib.sha256()
    for column in ("id", "source", "reference"):
        for value in rows[column]:
            digest.update(value.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()[:16]


def _fingerprint(config: CalibrateConfig, task: Task, revision: str, digest: str) -> dict:
    """Everything that determines the rows; a resumed run must match it exactly."""
    return {
        "large_model": config.large,
        "large_model_revision": revision,
        "task": task.name,
        "task_source": task.source,
        "split": config.split,
        "max_samples": config.max_samples,
        "rows_digest": digest,
        "prefix": task.prefix,
        "max_source_length": config.max_source_length,
        "max_new_tokens": config.max_new_tokens,
        "batch_size": config.batch_size,
        "dtype": config.dtype,
        "source_column": task.source_column,
        "target_column": task.target_column,
    }


def _is_calibration_run(output: Path) -> bool:
    return (output / RUN_FILE).is_file()


def default_output(task: Task) -> Path:
    """calibration/TASK: the folder the shipped recipes read (recipes/iwslt.yaml, ...)."""
    return Path("calibration") / task.name


def check_output_folder(output: Path, overwrite: bool) -> None:
    """Before any work: `output` must be a folder that is new, empty, or a calibration run
    (which resumes, or with --overwrite starts afresh), and writable. A folder of the user's
    own files is never used, with or without --overwrite."""
    check_writable_folder(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file; give a folder for the dataset")
    foreign = output.is_dir() and any(entry.name != LOCK_FILE for entry in output.iterdir())
    if foreign and not _is_calibration_run(output):
        raise UserError(
            f"--output {output} holds files that are not a calibration run; choose a new or "
            "empty folder (--overwrite only ever replaces an earlier calibration run)"
        )


def _check_same_run(output: Path, fingerprint: dict) -> None:
    """Refuse an `output` that holds another run (this same run resumes).

    Read-only, so that every process of a distributed run checks (and fails) alike."""
    run_file = output / RUN_FILE
    if run_file.exists():
        previous = _read_run(output).get("fingerprint", {})
        changed = differing_keys(previous, fingerprint)
        if changed:
            raise OtherRunError(
                f"{output} holds a different calibration run (differs in: {', '.join(changed)});"
                " choose another --output, or pass --overwrite to start afresh",
                changed,
            )


def _remove_run(output: Path) -> None:
    """Delete what an earlier calibrate run wrote into `output`, and nothing else."""
    run_file = output / RUN_FILE
    if not run_file.is_file():
        return
    try:
        split = _read_run(output).get("fingerprint", {}).get("split")
    except UserError:  # a damaged record: its data file is the one this tool names so
        split = None
    for shard in (output / SHARDS).glob("*shard-*"):
        shard.unlink()
    with contextlib.suppress(OSError):
        (output / SHARDS).rmdir()
    for data in (output / "data").glob(f"{split or '*'}-00000-of-00001.parquet"):
        data.unlink()
    with contextlib.suppress(OSError):
        (output / "data").rmdir()  # only if nothing else is there
    card = output / "README.md"
    if card.is_file() and "bild_align:" in card.read_text(encoding="utf-8", errors="ignore"):
        card.unlink()
    run_file.unlink()


def _read_run(output: Path) -> dict:
    run = read_json_file(
        output / RUN_FILE,
        "pass --overwrite to start this calibration afresh (only this tool's files are replaced)",
    )
    if not isinstance(run, dict):
        raise UserError(f"{output / RUN_FILE} is damaged (not a run record); pass --overwrite")
    return run


def data_file(output: Path, split: str) -> Path:
    return output / "data" / f"{split}-00000-of-00001.parquet"


def _data_complete(output: Path, split: str, rows: int) -> bool:
    """Whether the finished dataset file is there, readable, with every row."""
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(data_file(output, split)).num_rows == rows
    except Exception:  # noqa: BLE001 - missing, truncated or not Parquet: all mean "redo"
        return False


def _claim_output(output: Path, fingerprint: dict, overwrite: bool) -> None:
    """Main process only: start afresh if asked, and record the run's identity."""
    if overwrite:
        _remove_run(output)
    if not (output / RUN_FILE).exists():
        write_json_atomic(output / RUN_FILE, {"fingerprint": fingerprint, "complete": False})


def _lock(output: Path) -> RunLock:
    return RunLock(output / LOCK_FILE, "calibrate", str(output))


def dataset_card(meta: dict) -> str:
    """README.md for the calibration dataset: YAML metadata, then a short description."""
    import yaml

    header = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": meta["split"], "path": f"data/{meta['split']}-*"}],
            }
        ],
        "tags": ["bild-align", "calibration", "distillation"],
        "bild_align": meta,
    }
    return (
        "---\n"
        + yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
        + "---\n\n"
        + f"# Calibration data: {meta['large_model']} on {meta['task']} ({meta['split']})\n\n"
        + f"{meta['rows']} rows. `source` is the model input (prefix included), `target` is the "
        "greedy output of the large model, `reference` is the benchmark's own target and "
        "`id` / `index` map back to the benchmark row. Made with `bild-align calibrate` "
        f"(bild-align {meta['bild_align_version']}) for aligning a small model to the large one "
        "(Big Little Decoder, Kim et al. 2023).\n" + _prompt_note(meta)
    )


def _prompt_note(meta: dict) -> str:
    if "prompt_template" not in meta:
        return ""
    chat = ", wrapped in the tokenizer's chat template" if meta["chat_template"] else ""
    return (
        "\nThe large model is decoder-only: `prompt` is what it read (the template "
        f"{meta['prompt_template']!r} around the source{chat}), and `target` is its completion "
        "alone.\n"
    )


def _finalize(output: Path, store: ShardStore, expected: int, meta: dict) -> Path:
    unique: dict[str, dict] = {}
    for row in store.read_all():  # an id written twice (e.g. by an older crashed run) counts once
        unique.setdefault(row["id"], row)
    rows = sorted(unique.values(), key=lambda row: row["index"])
    if len(rows) != expected:
        raise UserError(
            f"calibration shards hold {len(rows)} of the {expected} rows expected; run the same "
            "command again to finish"
        )
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = data_file(output, meta["split"])
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    write_bytes_atomic(data, buffer.getvalue().to_pybytes())
    write_text_atomic(output / "README.md", dataset_card({**meta, "rows": len(rows)}))
    run = _read_run(output)
    write_json_atomic(output / RUN_FILE, {**run, "complete": True, "rows": len(rows)})
    store.clear()
    return data


def _push_later(repo_id: str, output: Path) -> str:
    return f"hf upload {repo_id} {output} --repo-type dataset"


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
    _lock(output).probe()
    hub = None
    if config.push_to_hub:
        later = "calibrate without --push-to-hub and push later with `hf upload`"
        hub = check_hub_access(config.push_to_hub, config.private, repo_type="dataset", later=later)
    rows = load_rows(task, config.split, config.max_samples)
    device = state.device if state.num_processes > 1 else config.device
    model, tokenizer, revision = load_seq2seq_or_causal(
        config.large, dtype=config.dtype, device=device
    )
    prompter = Prompter.for_model(model, task, config.prompt_template, config.chat_template)
    prompter.check_tokenizer(tokenizer)
    max_source_length, max_new_tokens = fit_lengths(
        {config.large: model},
        config.max_source_length,
        config.max_new_tokens,
        defaults=(task.max_source_length, task.max_target_length),
    )
    config = replace(
        config,
        output=str(output),
        max_source_length=max_source_length,
        max_new_tokens=max_new_tokens,
    )
    generation = use_plain_generation(model)
    inputs = _model_inputs(rows, prompter, tokenizer, config.max_source_length)
    fingerprint = _fingerprint(config, task, revision, rows_digest(rows))
    if prompter.decoder_only:  # (absent for encoder-decoder runs, whose records predate it)
        fingerprint.update(prompter.describe())
    if not config.overwrite:
        _check_same_run(output, fingerprint)
    state.wait_for_everyone()
    lock = _lock(output)
    if state.is_main_process:
        lock.acquire()
        _claim_output(output, fingerprint, config.overwrite)
    state.wait_for_everyone()
    meta = {
        **fingerprint,
        "generation": {
            **generation,
            "max_new_tokens": config.max_new_tokens,
        },
        "bild_align_version": bild_align.__version__,
    }
    try:
        run = _read_run(output)
        complete = run.get("complete") and _data_complete(output, config.split, len(rows))
        if complete:
            if state.is_main_process:
                print(f"{output} already holds this complete run ({run.get('rows')} rows)")
        else:
            if run.get("complete") and state.is_main_process:
                print(
                    f"{data_file(output, config.split)} is missing or damaged; decoding its "
                    f"{len(rows)} rows again",
                    file=sys.stderr,
                )
            try:
                _decode_missing(config, rows, inputs, model, tokenizer, prompter, output, state)
            except KeyboardInterrupt:  # its finished rows are in the shards by now
                if state.is_main_process:
                    kept = len(ShardStore(output / SHARDS).done_ids())
                    print(
                        f"\ninterrupted: {kept} of {len(rows)} rows are kept in {output / SHARDS};"
                        " run the same command again to finish",
                        file=sys.stderr,
                    )
                raise
            state.wait_for_everyone()
            if state.is_main_process:
                _finalize(output, ShardStore(output / SHARDS), len(rows), meta)
            state.wait_for_everyone()
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
        print(f"pushed to {url}")
    return output


def _model_inputs(rows, prompter: Prompter, tokenizer, max_source_length: int) -> list[str]:
    """What the model reads per row: the source, or (decoder-only) the prompt."""
    if not prompter.decoder_only:
        return list(rows["source"])
    if "prompt" in rows.column_names:
        return list(rows["prompt"])
    return prompter.prompt_texts(tokenizer, list(rows["source"]), max_source_length)


def _decode_missing(
    config, rows, inputs, model, tokenizer, prompter: Prompter, output: Path, state
) -> None:
    store = ShardStore(output / SHARDS)
    done = store.done_ids()
    sources, ids, references = (list(rows[name]) for name in ("source", "id", "reference"))
    if prompter.decoder_only:
        lengths = token_lengths(tokenizer, inputs, None, special_tokens=not prompter.chat)
        prompter.check_fits(model, max(lengths), config.max_new_tokens)
    else:
        lengths = token_lengths(tokenizer, sources, config.max_source_length)
    order = [index for index in length_sorted(lengths) if ids[index] not in done]
    mine = order[state.process_index :: state.num_processes]
    if done and state.is_main_process:
        print(f"resuming: {len(done)} of {len(rows)} rows kept from the interrupted run")
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
