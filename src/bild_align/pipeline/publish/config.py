"""`bild-align export-generate` and `bild-align push`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bild_align.options import (
    option,
)
from bild_align.pipeline.base_config import (
    Config,
)


@dataclass
class ExportGenerateConfig(Config):
    """`bild-align export-generate DIR`: BiLD as a transformers custom_generate repository."""

    output: str = option(help="the folder to write", command_line=False)
    push_to_hub: str | None = option(
        None,
        "also upload the folder to this Hub model repository (token from HF_TOKEN or `hf auth "
        "login`); then `generate(..., custom_generate=REPO, trust_remote_code=True)` loads it",
    )
    private: bool = option(False, "with --push-to-hub: create the repository as private")

    def problems(self) -> Iterator[str]:
        if self.private and not self.push_to_hub:
            yield ("--private goes with --push-to-hub REPO")


@dataclass
class PushConfig(Config):
    """`bild-align push MODEL_DIR --repo REPO`: an aligned model and its card to the Hub."""

    model_dir: str = option(help="the aligned model's folder", command_line=False)
    repo: str = option(help="the Hub model repository, e.g. me/t5-small-aligned-to-t5-large")
    private: bool = option(False, "create the repository as private")
