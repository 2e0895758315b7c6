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

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

import bild_align
from bild_align.errors import UserError
from bild_align.greedy import chunked, greedy_texts, length_sorted, token_lengths
from bild_align.io_utils import write_json_atomic, write_text_atomic
from bild_align.models import load_seq2seq
from bild_align.shards import ShardStore
from bild_align.tasks import Task, get_task, load_rows


@dataclass
class CalibrateConfig:
    large: str
    task: str
    output: str
    split: str = "train"
    max_samples: int | None = None
    batch_size: int = 32
    max_new_tokens: int | None = None  # default: the task's max_target_length
    max_source_length: int | None = None  # default: the task's
    dtype: str = "float32"
    device: str = "auto"
    shard_rows: int = 256
    source_column: str | None = None
    target_column: str | None = None
    prefix: str | None = None
    push_to_hub: str | None = None
    private: bool = False
    overwrite: bool = False


RUN_FILE = "run.json"


def _fingerprint(config: CalibrateConfig, task: Task, revision: str) -> dict:
    """Everything that determines the rows; a resumed run must match it exactly."""
    return {
        "large_model": config.large,
        "large_model_revision": revision,
        "task": task.name,
        "task_source": task.source,
        "split": config.split,
        "max_samples": config.max_samples,
        "prefix": task.prefix,
        "max_source_length": config.max_source_length,
        "max_new_tokens": config.max_new_tokens,
        "dtype": config.dtype,
        "source_column": task.source_column,
        "target_column": task.target_column,
    }


def _check_output(output: Path, fingerprint: dict) -> None:
    """Refuse an `output` that holds another run or other files (this same run resumes).

    Read-only, so that every process of a distributed run checks (and fails) alike."""
    run_file = output / RUN_FILE
    if run_file.exists():
        previous = json.loads(run_file.read_text()).get("fingerprint", {})
        if previous != fingerprint:
            changed = sorted(
                key
                for key in set(previous) | set(fingerprint)
                if previous.get(key) != fingerprint.get(key)
            )
            raise UserError(
                f"{output} holds a different calibration run (differs in: {', '.join(changed)});"
                " choose another --output, or pass --overwrite to start afresh"
            )
    elif output.exists() and any(output.iterdir()):
        raise UserError(f"{output} exists and is not a calibration run; choose another --output")


def _claim_output(output: Path, fingerprint: dict, overwrite: bool) -> None:
    """Main process only: start afresh if asked, and record the run's identity."""
    if overwrite and output.exists():
        shutil.rmtree(output)
    if not (output / RUN_FILE).exists():
        write_json_atomic(output / RUN_FILE, {"fingerprint": fingerprint, "complete": False})


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
        "(Big Little Decoder, Kim et al. 2023).\n"
    )


def _finalize(output: Path, store: ShardStore, expected: int, meta: dict) -> Path:
    rows = sorted(store.read_all(), key=lambda row: row["index"])
    ids = [row["id"] for row in rows]
    if len(rows) != expected or len(set(ids)) != len(ids):
        raise RuntimeError(
            f"calibration shards hold {len(rows)} rows ({len(set(ids))} distinct) but "
            f"{expected} were expected; run the same command again to finish"
        )
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = output / "data" / f"{meta['split']}-00000-of-00001.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    temporary = data.with_name(f".{data.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows), temporary)
    temporary.replace(data)
    write_text_atomic(output / "README.md", dataset_card({**meta, "rows": len(rows)}))
    run = json.loads((output / RUN_FILE).read_text())
    write_json_atomic(output / RUN_FILE, {**run, "complete": True, "rows": len(rows)})
    store.clear()
    return data


def push_to_hub(folder: Path, repo_id: str, private: bool) -> str:
    """Upload the dataset and its card; the token comes from HF_TOKEN or `hf auth login`."""
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise UserError(
            "--push-to-hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login`"
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            allow_patterns=["README.md", "data/*"],
        )
    except Exception as error:  # noqa: BLE001 - network, permission and offline errors alike
        raise UserError(
            f"could not push to the Hub dataset {repo_id}: {type(error).__name__} (is there a "
            "network, and may this token write there?). The dataset is saved in "
            f"{folder}; push it later with `hf upload {repo_id} {folder} --repo-type dataset`"
        ) from None
    return f"https://huggingface.co/datasets/{repo_id}"


def run_calibration(config: CalibrateConfig) -> Path:
    from accelerate import PartialState

    state = PartialState()
    task = get_task(
        config.task,
        source_column=config.source_column,
        target_column=config.target_column,
        prefix=config.prefix,
    )
    config.max_new_tokens = config.max_new_tokens or task.max_target_length
    config.max_source_length = config.max_source_length or task.max_source_length
    rows = load_rows(task, config.split, config.max_samples)
    device = state.device if state.num_processes > 1 else config.device
    model, tokenizer, revision = load_seq2seq(config.large, dtype=config.dtype, device=device)
    output = Path(config.output)
    fingerprint = _fingerprint(config, task, revision)
    if not config.overwrite:
        _check_output(output, fingerprint)
    state.wait_for_everyone()
    if state.is_main_process:
        _claim_output(output, fingerprint, config.overwrite)
    state.wait_for_everyone()
    meta = {
        **fingerprint,
        "generation": {"do_sample": False, "num_beams": 1, "max_new_tokens": config.max_new_tokens},
        "bild_align_version": bild_align.__version__,
    }
    run = json.loads((output / RUN_FILE).read_text())
    if run.get("complete"):
        if state.is_main_process:
            print(f"{output} already holds this complete run ({run.get('rows')} rows)")
    else:
        _decode_missing(config, rows, model, tokenizer, output, state)
        state.wait_for_everyone()
        if state.is_main_process:
            _finalize(output, ShardStore(output / ".shards"), len(rows), meta)
        state.wait_for_everyone()
    if config.push_to_hub and state.is_main_process:
        url = push_to_hub(output, config.push_to_hub, config.private)
        print(f"pushed to {url}")
    return output


def _decode_missing(config, rows, model, tokenizer, output: Path, state) -> None:
    store = ShardStore(output / ".shards")
    done = store.done_ids()
    sources, ids, references = (list(rows[name]) for name in ("source", "id", "reference"))
    lengths = token_lengths(tokenizer, sources, config.max_source_length)
    order = [index for index in length_sorted(lengths) if ids[index] not in done]
    mine = order[state.process_index :: state.num_processes]
    if done and state.is_main_process:
        print(f"resuming: {len(done)} of {len(rows)} rows already done")
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
                    [sources[i] for i in batch],
                    config.max_source_length,
                    config.max_new_tokens,
                )
                for index, text in zip(batch, texts, strict=True):
                    buffer.append(
                        {
                            "index": index,
                            "id": ids[index],
                            "source": sources[index],
                            "target": text,
                            "reference": references[index],
                        }
                    )
                if len(buffer) >= config.shard_rows:
                    store.write(buffer, tag=f"rank{state.process_index}")
                    buffer = []
                # other processes advance at the same pace: show the whole run's progress
                progress.update(len(batch) * state.num_processes)
        finally:
            store.write(buffer, tag=f"rank{state.process_index}")  # keep finished rows
        progress.n = min(progress.n, progress.total)
