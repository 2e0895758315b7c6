"""`bild-align demo`'s settings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bild_align.core.policies import threshold_problems
from bild_align.options import (
    nonnegative_int,
    number_list,
    option,
    positive_int,
)
from bild_align.pipeline.base_config import (
    DEMO_PAIRS,
    DIVERGENCES,
    MIN_DEMO_ROWS,
    OBJECTIVES,
    Config,
)


@dataclass
class DemoConfig(Config):
    """`bild-align demo`: calibrate -> train -> eval on the shipped pair, offline."""

    pair: str = option(
        "t5",
        "the shipped pair: t5 (encoder-decoder, data/demo) or causal (decoder-only Llama "
        "models with the same vocabulary, data/demo-causal)",
        choices=DEMO_PAIRS,
    )
    output_dir: str | None = option(
        None, "where everything goes", default_text="outputs/demo, or outputs/demo-causal"
    )
    calibration_rows: int | None = option(
        None, "calibrate only the first N train rows", parse=positive_int, default_text="all"
    )
    eval_samples: int = option(200, "test sentences evaluated", parse=positive_int)
    rollback_threshold: float = option(
        6.0, "rollback threshold of the BiLD rows", aliases=("--rb",)
    )
    fallback_threshold: float = option(
        0.3, "fallback threshold of the BiLD rows", aliases=("--fb",)
    )
    sweep_rollback_thresholds: tuple[float, ...] = option(
        (3.0, 4.0, 6.0, 8.0),
        "rollback thresholds of the sweep",
        parse=number_list,
        aliases=("--sweep-rb",),
    )
    sweep_fallback_thresholds: tuple[float, ...] = option(
        (0.2, 0.3, 0.4, 0.5),
        "fallback thresholds of the sweep",
        parse=number_list,
        aliases=("--sweep-fb",),
    )
    max_new_tokens: int = option(64, "output length limit", parse=positive_int)
    tune_samples: int | None = option(
        None,
        "validation rows `tune` uses for the aligned pair (0: skip tuning)",
        parse=nonnegative_int,
        default_text="all 744",
    )
    objective: str = option(
        "sequence", "alignment objective (train's objective key)", choices=OBJECTIVES
    )
    divergence: str = option(
        "forward_kl", "with --objective token: the divergence", choices=DIVERGENCES
    )
    on_policy_fraction: float = option(
        0.0, "share of alignment batches on the small model's own outputs"
    )
    max_steps: int | None = option(
        None,
        "alignment training steps (a short demo: e.g. 100)",
        parse=positive_int,
        default_text="recipes/demo-align.yaml's 3000",
    )
    drafter_layers: int = option(
        1,
        "a drafter with this many decoder layers, made from the large model (`bild-align "
        "drafter`), is aligned, tuned and evaluated beside the shipped small model (0: none)",
        parse=nonnegative_int,
    )
    overwrite: bool = option(
        False,
        "start afresh: delete what an earlier demo wrote to OUTPUT_DIR (calibration, aligned "
        "model, eval results; nothing else) instead of reusing it",
    )
    align_overrides: dict | None = option(
        None, "recipe keys for the alignment step", command_line=False
    )

    def root(self) -> str:
        """The output folder: the one given, else the pair's own under outputs/."""
        default = "outputs/demo-causal" if self.pair == "causal" else "outputs/demo"
        return self.output_dir or default

    def alignment(self) -> dict:
        """The recipe keys of the alignment objective."""
        return {
            "objective": self.objective,
            "divergence": self.divergence,
            "on_policy_fraction": self.on_policy_fraction,
        }

    def aligned_folder(self) -> str:
        """`aligned` for the default objective; another folder per other objective, so that
        comparing objectives never reuses the wrong model."""
        if self.alignment() == DemoConfig().alignment():
            return "aligned"
        parts = [self.objective]
        if self.objective == "token":
            parts.append(self.divergence)
        if self.on_policy_fraction:
            parts.append(f"on-policy-{self.on_policy_fraction:g}")
        return "aligned-" + "-".join(parts)

    def drafter_folder(self) -> str:
        """The unaligned drafter's folder."""
        return f"drafter-{self.drafter_layers}"

    def problems(self) -> Iterator[str]:
        yield from threshold_problems(
            (self.rollback_threshold, *self.sweep_rollback_thresholds),
            (self.fallback_threshold, *self.sweep_fallback_thresholds),
            names=("--rb and --sweep-rb", "--fb and --sweep-fb"),
            fallback_at_most_one=True,
        )
        if not 0 <= self.on_policy_fraction <= 1:
            yield ("--on-policy-fraction must lie within [0, 1]")
        if not self.sweep_rollback_thresholds or not self.sweep_fallback_thresholds:
            yield ("--sweep-rb and --sweep-fb need one or more numbers")
        if self.tune_samples and self.tune_samples < MIN_DEMO_ROWS:  # tune's own minimum
            yield (
                f"--tune-samples {self.tune_samples}: tune needs at least {MIN_DEMO_ROWS} rows "
                "to bound a quality drop (0 skips tuning)"
            )
        if self.calibration_rows is not None and self.calibration_rows < MIN_DEMO_ROWS:
            yield (
                f"--calibration-rows {self.calibration_rows}: the demo needs at least "
                f"{MIN_DEMO_ROWS} (a fifth of them is held out to evaluate the alignment)"
            )
