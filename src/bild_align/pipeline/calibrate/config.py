"""`bild-align calibrate`'s settings."""

from __future__ import annotations

from dataclasses import dataclass

from bild_align.options import (
    option,
    positive_int,
)
from bild_align.pipeline.base_config import (
    _DEMO_MODEL,
    Config,
    _chat_template,
    _device,
    _dtype,
    _max_new_tokens,
    _max_samples,
    _max_source_length,
    _prefix,
    _prompt_template,
    _source_column,
    _target_column,
    _task,
)


@dataclass
class CalibrateConfig(Config):
    """`bild-align calibrate`: the large model's greedy outputs over a benchmark split."""

    large: str = option(
        help="the large model: a Hub id or a local save_pretrained directory",
        default_text=_DEMO_MODEL.format("large"),
    )
    task: str = _task()
    output: str | None = option(
        None,
        "output directory",
        default_text="calibration/TASK, the folder the shipped recipes read",
    )
    split: str = option("train", "benchmark split")
    max_samples: int | None = _max_samples()
    batch_size: int = option(32, "inputs decoded together", parse=positive_int)
    max_new_tokens: int | None = _max_new_tokens()
    max_source_length: int | None = _max_source_length()
    dtype: str = _dtype()
    device: str = _device("; under accelerate launch, each process's own")
    shard_rows: int = option(
        256,
        "finished rows per on-disk shard; at most this many are redone after a crash",
        parse=positive_int,
    )
    source_column: str | None = _source_column()
    target_column: str | None = _target_column()
    prefix: str | None = _prefix()
    prompt_template: str | None = _prompt_template()
    chat_template: bool = _chat_template()
    push_to_hub: str | None = option(
        None,
        "also upload the dataset to this Hub dataset "
        "repository (token from HF_TOKEN or `hf auth login`)",
    )
    private: bool = option(False, "with --push-to-hub: create the repository as private")
    overwrite: bool = option(
        False,
        "delete what an earlier run of this command wrote to "
        "OUTPUT and start afresh (other files are never touched)",
    )
