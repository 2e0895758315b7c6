"""Benchmark registry: where each task's data lives, its columns, prefix, metric and lengths.

    task = get_task("iwslt2017-de-en")                 # or a local file: get_task("pairs.jsonl",
    rows = load_rows(task, "validation", 100)          #   source_column="de", target_column="en")
    rows[0]   # {"id": "validation-0", "source": "Das ...", "reference": "The ..."}

`load_rows` returns a `datasets.Dataset` with three string columns: `id` (maps back to the
benchmark row), `source` (the model input, prefix included) and `reference` (the benchmark's
target, "" where it has none). Hub datasets are loaded in their Parquet form, because current
`datasets` releases no longer run loading scripts; when the plain repository fails, the loader
tries the `refs/convert/parquet` export, and its error says what was tried.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bild_align.errors import UserError, first_line

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class TaskError(UserError):
    """The task cannot be resolved or loaded; the message says what to do."""


@dataclass(frozen=True)
class Task:
    name: str
    metric: str  # "bleu", "rougeL" or "rougeLsum"
    hub_path: str | None = None  # Hub dataset id
    hub_config: str | None = None
    parquet_data_dir: str | None = None  # folder in the refs/convert/parquet export
    local_path: str | None = None  # a local JSON lines / CSV / Parquet file
    source_column: str = "source"
    target_column: str = "target"
    translation_pair: tuple[str, str] | None = None  # keys of a `translation` dict column
    id_column: str | None = None
    prefix: str = ""  # what an encoder-decoder model reads before the source (T5's "summarize: ")
    prompt_template: str = "{source}\n"  # what a decoder-only model reads (bild_align.data.prompts)
    max_source_length: int = 256
    max_target_length: int = 128
    require_target: bool = False  # a missing target column is an error, not "no reference"
    builder: Callable[[str], list[dict]] | None = None  # for tasks built on this machine

    @property
    def source(self) -> str:
        if self.builder is not None:
            return f"{self.name} (built on this machine)"
        return self.local_path or self.hub_path or self.name


TRANSLATE_DE_EN = "Translate German to English:\n{source}\n"


def _translation(name, hub_path, config, data_dir, **extra) -> Task:
    return Task(
        name=name,
        metric="bleu",
        hub_path=hub_path,
        hub_config=config,
        parquet_data_dir=data_dir,
        translation_pair=("de", "en"),
        prompt_template=TRANSLATE_DE_EN,
        **extra,
    )


REGISTRY: dict[str, Task] = {
    "iwslt2017-de-en": _translation(
        "iwslt2017-de-en", "IWSLT/iwslt2017", "iwslt2017-de-en", "iwslt2017-de-en"
    ),
    "wmt14-de-en": _translation("wmt14-de-en", "wmt/wmt14", "de-en", "de-en"),
    "xsum": Task(
        name="xsum",
        metric="rougeL",
        hub_path="EdinburghNLP/xsum",
        parquet_data_dir="default",
        source_column="document",
        target_column="summary",
        id_column="id",
        prefix="summarize: ",
        prompt_template="Summarize the article in one sentence:\n{source}\n",
        max_source_length=1024,
        max_target_length=64,
    ),
    "cnn_dailymail": Task(
        name="cnn_dailymail",
        metric="rougeLsum",
        hub_path="abisee/cnn_dailymail",
        hub_config="3.0.0",
        parquet_data_dir="3.0.0",
        source_column="article",
        target_column="highlights",
        id_column="id",
        prefix="summarize: ",
        prompt_template="Summarize the article in a few sentences:\n{source}\n",
        max_source_length=1024,
        max_target_length=128,
    ),
}


def _gettext_rows(split: str) -> list[dict]:
    from bild_align.data.gettext_corpus import load_split

    return load_split(split)


# The paper's published checkpoints (Kim et al. 2023) and the task each was fine-tuned on, so that
# `calibrate --large kssteven/mT5-large-iwslt2017-de-en` needs no --task.
PUBLISHED_CHECKPOINTS: dict[str, str] = {
    f"kssteven/{model}": task
    for prefix, benchmark, task in (
        ("mT5", "iwslt2017-de-en", "iwslt2017-de-en"),
        ("mT5", "wmt2014-de-en", "wmt14-de-en"),
        ("T5", "xsum", "xsum"),
        ("T5", "cnndm", "cnn_dailymail"),
    )
    for model in (
        f"{prefix}-large-{benchmark}",
        f"{prefix}-small-{benchmark}",
        f"{prefix}-small-{benchmark}-bild-aligned",
    )
}


def published_task(model: str | None) -> str | None:
    """The task a published BiLD checkpoint was fine-tuned on (None for any other model)."""
    return PUBLISHED_CHECKPOINTS.get((model or "").rstrip("/"))


REGISTRY["gettext-de-en"] = Task(
    name="gettext-de-en",
    metric="bleu",
    source_column="de",
    target_column="en",
    id_column="id",
    prompt_template=TRANSLATE_DE_EN,
    max_source_length=64,
    max_target_length=64,
    builder=_gettext_rows,
)


def get_task(
    name: str,
    *,
    source_column: str | None = None,
    target_column: str | None = None,
    prefix: str | None = None,
) -> Task:
    """A registered task, or a local file's task when `name` is a path to one."""
    overrides = {} if prefix is None else {"prefix": prefix}
    if name in REGISTRY:
        return replace(REGISTRY[name], **overrides)
    path = Path(name)
    if path.suffix.lower() in LOCAL_FORMATS:
        if not path.is_file():
            raise TaskError(f"task file {name} does not exist")
        return Task(
            name=path.stem,
            metric="bleu",
            local_path=str(path),
            source_column=source_column or "source",
            target_column=target_column or "target",
            prefix=overrides.get("prefix", ""),
            require_target=target_column is not None,
        )
    known = ", ".join(sorted(REGISTRY))
    raise TaskError(
        f"unknown task {name!r}: use one of {known}, or a local .jsonl/.csv/.parquet file with "
        "--source-column and --target-column"
    )


def _load_hub_split(task: Task, split: str):
    import datasets

    from bild_align.runs.hub import hub_reachable

    if not hub_reachable():  # `datasets` would retry for most of a minute
        raise TaskError(
            f"could not load {task.name} ({task.hub_path}): the Hub cannot be reached from "
            "this machine (no network). Set HF_HUB_OFFLINE=1 to use a copy in the local cache, "
            "or pass the data as a local .parquet/.jsonl file with --source-column/"
            "--target-column."
        )

    attempts = [
        dict(path=task.hub_path, name=task.hub_config),
        dict(path=task.hub_path, revision="refs/convert/parquet", data_dir=task.parquet_data_dir),
    ]
    errors = []
    for kwargs in attempts:
        try:
            return datasets.load_dataset(**kwargs, split=split)
        except Exception as error:  # noqa: BLE001 - every failure is reported together below
            errors.append(f"{kwargs}: {type(error).__name__}: {first_line(error)}")
    raise TaskError(
        f"could not load {task.name} ({task.hub_path}, config {task.hub_config}, split "
        f"{split}). Tried: " + " | ".join(errors) + ". Check the network and the split name, "
        "or download the data once and pass it as a local .parquet/.jsonl file with "
        "--source-column/--target-column."
    )


def _load_split(task: Task, split: str):
    import datasets

    if task.builder is not None:
        return datasets.Dataset.from_list(task.builder(split))
    if task.local_path is not None:
        suffix = Path(task.local_path).suffix.lower()
        text_file = LOCAL_FORMATS[suffix] != "parquet"
        if text_file:  # before pyarrow, which may keep undecodable bytes until a row is read
            header_lines = 1 if suffix == ".csv" else 0
            if _check_text(task.local_path, json_lines=False) <= header_lines:
                raise TaskError(f"no rows in {task.local_path}")
        try:
            return datasets.load_dataset(
                LOCAL_FORMATS[suffix], data_files={split: task.local_path}, split=split
            )
        except Exception as error:  # noqa: BLE001 - a malformed file is a user mistake
            if text_file:  # name the line, where one is at fault
                _check_text(task.local_path, json_lines=suffix == ".jsonl")
            raise TaskError(f"could not read {task.local_path}: {_root_cause(error)}") from None
    return _load_hub_split(task, split)


def _check_text(path: str, json_lines: bool) -> int:
    """UTF-8 throughout, and for JSON lines one object per line: errors name the line. Returns
    the number of non-blank lines."""
    import json

    lines = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            lines += bool(line.strip())
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise TaskError(
                    f"{path} is not UTF-8 text (line {number}, byte {error.start + 1}: "
                    f"{line[error.start : error.start + 1]!r}); re-save it as UTF-8"
                ) from None
            if json_lines and text.strip():
                try:
                    json.loads(text)
                except json.JSONDecodeError as error:
                    raise TaskError(
                        f"{path}: line {number} is not valid JSON ({error.msg}); a .jsonl file "
                        "holds one JSON object per line"
                    ) from None
    return lines


def _root_cause(error: BaseException) -> str:
    """The innermost exception's first line: `datasets` wraps the useful one."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return f"{type(error).__name__}: {first_line(error)}"


def _column_getter(task: Task, columns: list[str], features) -> tuple[Callable, Callable]:
    if task.translation_pair is not None and "translation" in columns:
        source_language, target_language = task.translation_pair
        return (
            lambda row: row["translation"][source_language],
            lambda row: row["translation"][target_language],
        )
    if task.source_column not in columns:
        raise TaskError(
            f"{task.source}: no source column {task.source_column!r}; the columns are "
            f"{columns} (set --source-column)"
        )
    has_target = task.target_column in columns
    if task.require_target and not has_target:
        raise TaskError(
            f"{task.source}: no target column {task.target_column!r}; the columns are "
            f"{columns} (set --target-column)"
        )
    _check_text_column(task, features, task.source_column, "--source-column")
    if has_target:
        _check_text_column(task, features, task.target_column, "--target-column")
    return (
        lambda row: row[task.source_column],
        (lambda row: row[task.target_column]) if has_target else (lambda row: ""),
    )


def _check_text_column(task: Task, features, column: str, option: str) -> None:
    """Refuse a column of numbers, lists or records: str() of them would be decoded as if it
    were text ("3", "['Hallo', 'Welt']"), and integers crash the tokenizer."""
    import datasets

    feature = None if features is None else features.get(column)
    if feature is None or (
        isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string", "null")
    ):
        return
    kind = feature.dtype if isinstance(feature, datasets.Value) else type(feature).__name__
    raise TaskError(
        f"{task.source}: column {column!r} holds {kind} values, not text; choose a text column "
        f"({option}) or store these values as strings in the file"
    )


def load_rows(task: Task, split: str, max_samples: int | None = None):
    """The split as a `datasets.Dataset` with columns id, source (prefixed) and reference, and
    prompt where a local file has a `prompt` column (a decoder-only model's ready input)."""
    dataset = _load_split(task, split)
    if len(dataset) == 0:
        if task.local_path is not None:
            raise TaskError(f"no rows in {task.local_path}")
        raise TaskError(f"{task.source}: split {split!r} is empty")
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    columns = list(dataset.column_names)
    has_prompt = task.local_path is not None and "prompt" in columns
    if has_prompt and task.source_column not in columns:  # ready prompts stand for the source
        task = dataclasses.replace(task, source_column="prompt")
    get_source, get_reference = _column_getter(task, columns, dataset.features)
    id_column = task.id_column if task.id_column in columns else None

    def convert(row, index):
        if has_prompt and (row["prompt"] is None or not str(row["prompt"]).strip()):
            raise TaskError(  # an empty prompt would be decoded from nothing
                f"{task.source}: row {index} of split {split!r} has an empty prompt; remove "
                "or fill that row"
            )
        source = get_source(row)
        if source is None:  # str(None) would be decoded as the text "None"
            raise TaskError(
                f"{task.source}: row {index} of split {split!r} has no source text (null); "
                "remove or fill that row"
            )
        reference = get_reference(row)
        converted = {
            "id": str(row[id_column]) if id_column else f"{split}-{index}",
            "source": task.prefix + str(source),
            "reference": "" if reference is None else str(reference),
        }
        if has_prompt:
            converted["prompt"] = str(row["prompt"])
        return converted

    return dataset.map(
        convert, with_indices=True, remove_columns=dataset.column_names, desc="preparing inputs"
    )
