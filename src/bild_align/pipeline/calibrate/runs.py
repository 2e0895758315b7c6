"""A calibration run's record in its output folder: identity, lock, resume, and the finished
dataset with its card.

    fingerprint = run_fingerprint(config, task, revision, rows_digest(rows))   # the run's identity
    check_output_folder(output, overwrite)   # new, empty, or a calibration run; never others'
    check_same_run(output, fingerprint)      # another run's folder is refused (OtherRunError)
    claim_output(output, fingerprint, overwrite)   # run.json: the run's identity
    finalize(output, store, expected, meta)  # shards -> data/<split>-*.parquet and README.md

`run.json` holds the fingerprint (what determines the rows) and whether the run is complete;
finished rows wait in `.shards/` until `finalize` merges them.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from bild_align.configs import CalibrateConfig
from bild_align.data.tasks import Task
from bild_align.errors import OtherRunError, UserError
from bild_align.runs.files import (
    check_writable_folder,
    read_json_file,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from bild_align.runs.records import RunLock, recorded_differences
from bild_align.runs.shards import ShardStore

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


def run_fingerprint(config: CalibrateConfig, task: Task, revision: str, digest: str) -> dict:
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


def is_calibration_run(output: Path) -> bool:
    return (output / RUN_FILE).is_file()


def check_output_folder(output: Path, overwrite: bool) -> None:
    """Before any work: `output` must be a folder that is new, empty, or a calibration run
    (which resumes, or with --overwrite starts afresh), and writable. A folder of the user's
    own files is never used, with or without --overwrite."""
    check_writable_folder(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file; give a folder for the dataset")
    foreign = output.is_dir() and any(entry.name != LOCK_FILE for entry in output.iterdir())
    if foreign and not is_calibration_run(output):
        raise UserError(
            f"--output {output} holds files that are not a calibration run; choose a new or "
            "empty folder (--overwrite only ever replaces an earlier calibration run)"
        )


def check_same_run(output: Path, fingerprint: dict) -> None:
    """Refuse an `output` that holds another run (this same run resumes).

    Read-only, so that every process of a distributed run checks (and fails) alike."""
    changed = recorded_differences(output / RUN_FILE, fingerprint, _START_AFRESH)
    if changed:
        raise OtherRunError(
            f"{output} holds a different calibration run (differs in: {', '.join(changed)});"
            " choose another --output, or pass --overwrite to start afresh",
            changed,
        )


def remove_run(output: Path) -> None:
    """Delete what an earlier calibrate run wrote into `output`, and nothing else."""
    run_file = output / RUN_FILE
    if not run_file.is_file():
        return
    try:
        split = read_run(output).get("fingerprint", {}).get("split")
    except UserError:  # a damaged record: its data file is the one this tool names so
        split = None
    for shard in (output / SHARDS).glob("*shard-*"):
        shard.unlink()
    with contextlib.suppress(OSError):
        (output / SHARDS).rmdir()
    for data in (output / "data").glob(data_file(output, split or "*").name):
        data.unlink()
    with contextlib.suppress(OSError):
        (output / "data").rmdir()  # only if nothing else is there
    card = output / "README.md"
    if card.is_file() and "bild_align:" in card.read_text(encoding="utf-8", errors="ignore"):
        card.unlink()
    run_file.unlink()


_START_AFRESH = (
    "pass --overwrite to start this calibration afresh (only this tool's files are replaced)"
)


def read_run(output: Path) -> dict:
    run = read_json_file(output / RUN_FILE, _START_AFRESH)
    if not isinstance(run, dict):
        raise UserError(f"{output / RUN_FILE} is damaged (not a run record); {_START_AFRESH}")
    return run


def data_file(output: Path, split: str) -> Path:
    return output / "data" / f"{split}-00000-of-00001.parquet"


def data_complete(output: Path, split: str, rows: int) -> bool:
    """Whether the finished dataset file is there, readable, with every row."""
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(data_file(output, split)).num_rows == rows
    except Exception:  # noqa: BLE001 - missing, truncated or not Parquet: all mean "redo"
        return False


def claim_output(output: Path, fingerprint: dict, overwrite: bool) -> None:
    """Main process only: start afresh if asked, and record the run's identity."""
    if overwrite:
        remove_run(output)
    if not (output / RUN_FILE).exists():
        write_json_atomic(output / RUN_FILE, {"fingerprint": fingerprint, "complete": False})


def run_lock(output: Path) -> RunLock:
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
        "(Big Little Decoder, Kim et al. 2023).\n" + prompt_note(meta)
    )


def prompt_note(meta: dict) -> str:
    if "prompt_template" not in meta:
        return ""
    chat = ", wrapped in the tokenizer's chat template" if meta["chat_template"] else ""
    return (
        "\nThe large model is decoder-only: `prompt` is what it read (the template "
        f"{meta['prompt_template']!r} around the source{chat}), and `target` is its completion "
        "alone.\n"
    )


def finalize(output: Path, store: ShardStore, expected: int, meta: dict) -> Path:
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
    run = read_run(output)
    write_json_atomic(output / RUN_FILE, {**run, "complete": True, "rows": len(rows)})
    store.clear()
    return data
