"""`bild-align drafter`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bild_align.options import option, positive_int
from bild_align.pipeline.base_config import Config, _dtype

DRAFTER_INITS = ("first-last", "spread", "first")


@dataclass
class DrafterConfig(Config):
    """`bild-align drafter --large L --layers N --output DIR`: a small model made from L."""

    large: str = option(help="the large model (Hub id or local folder) the drafter is made from")
    output: str = option(help="the drafter's folder (new, or empty)")
    layers: int = option(2, "decoder layers the drafter keeps, copied from the large model's")
    init: str = option(
        "first-last",
        "which of the large decoder's layers are copied: first-last (the first LAYERS-1 and "
        "the last, as Distil-Whisper), spread (evenly spaced) or first",
    )
    vocab_size: int | None = option(
        None,
        "score only the K target tokens the calibration outputs use most (with the special "
        "tokens) at each drafting step: a large vocabulary's output layer (mT5: 250k rows) "
        "costs more than a dozen decoder layers; the large model still checks with all",
        parse=positive_int,
        default_text="the whole vocabulary",
    )
    calibration_dataset: str | None = option(
        None,
        "with --vocab-size: the calibration dataset (a `calibrate` output folder or a Hub "
        "id) whose train targets are counted",
    )
    dtype: str = _dtype()

    def problems(self) -> Iterator[str]:
        if (self.vocab_size is None) != (self.calibration_dataset is None):
            yield (
                "--vocab-size and --calibration-dataset go together: the kept tokens are "
                "those the calibration outputs use most"
            )
        if self.layers < 1:
            yield (f"--layers must be 1 or more (got {self.layers})")
        if self.init not in DRAFTER_INITS:
            yield (f"--init {self.init}: choose from {', '.join(DRAFTER_INITS)}")
