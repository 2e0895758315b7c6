"""`bild-align tune`: the settings of searching the fastest setting within a budget."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bild_align.core.policies import (
    FALLBACK_RULES,
    MAX_SMALL_STEPS,
    threshold_problems,
)
from bild_align.options import (
    finite_float,
    name_list,
    nonnegative_int,
    number_list,
    option,
    positive_int,
    positive_int_list,
)
from bild_align.pipeline.base_config import (
    Config,
    _chat_template,
    _device,
    _dtype,
    _max_new_tokens,
    _max_source_length,
    _model,
    _prefix,
    _prompt_template,
    _source_column,
    _target_column,
    _task,
)


@dataclass
class TuneConfig(Config):
    """`bild-align tune`: the fastest BiLD setting within a quality budget, on held-out data."""

    small: str = _model("small")
    large: str = _model("large")
    task: str = _task()
    split: str = option(
        "validation", "split tuned on (the test split only when asked: it is then not held out)"
    )
    max_samples: int | None = option(
        None, "use only the first N rows of the split", parse=positive_int, default_text="all"
    )
    max_drop: float = option(
        1.0,
        "quality budget: the most points (of the task's metric) a setting may lose against the "
        "large model on the same examples, judged by the upper confidence bound of a paired "
        "bootstrap, not by the point estimate",
        parse=finite_float,
    )
    min_quality: float | None = option(
        None,
        "quality budget as a floor instead: the lower confidence bound of the setting's score "
        "must reach it (replaces --max-drop)",
        parse=finite_float,
    )
    confidence: float = option(
        0.95, "one-sided confidence of the budget's bootstrap bound", parse=finite_float
    )
    bootstrap: int = option(1000, "bootstrap resamples", parse=positive_int)
    fallback_rule: tuple[str, ...] = option(
        FALLBACK_RULES,
        "fallback rules searched: max_prob (the small model's top probability), entropy "
        "(exp(-entropy) of its distribution), learned (the small model's fallback head; left "
        "out when it has none)",
        parse=name_list,
        aliases=("--fallback",),
    )
    rollback_threshold: tuple[float, ...] = option(
        (0.0, 2.0, 4.0, 8.0),
        "the coarse grid's rollback thresholds",
        parse=number_list,
        aliases=("--rb",),
    )
    fallback_threshold: tuple[float, ...] = option(
        (0.05, 0.1, 0.2, 0.4),
        "the coarse grid's fallback thresholds",
        parse=number_list,
        aliases=("--fb",),
    )
    max_small_steps: tuple[int, ...] = option(
        (MAX_SMALL_STEPS,), "the coarse grid's max_small_steps", parse=positive_int_list
    )
    refine: int = option(
        3,
        "refinement rounds around the fastest settings within the budget (neighbouring rb, fb "
        "and max_small_steps); 0: the coarse grid only",
        parse=nonnegative_int,
    )
    search_batch_size: int = option(
        16,
        "inputs decoded together while searching (each row decides exactly as alone, so the "
        "decision counts are batch-1's)",
        parse=positive_int,
    )
    timing_rows: int = option(
        64,
        "inputs timed one at a time to fit the cost model and to verify the chosen setting "
        "against the large model",
        parse=positive_int,
    )
    max_new_tokens: int | None = _max_new_tokens()
    max_source_length: int | None = _max_source_length()
    dtype: str = _dtype()
    device: str = _device()
    output: str = option(
        "results/tune.json",
        "results JSON (the front, the chosen setting, the budget); a PNG plot of the front is "
        "written beside it; OUTPUT.partial.jsonl keeps every decoding, so that an interrupted "
        "run resumes and a rerun with another budget (--max-drop, --min-quality, --confidence, "
        "--bootstrap, --seed, --timing-rows) decodes nothing again",
    )
    save: bool = option(
        False,
        "write the chosen setting into the small model's folder (bild_policy.json); eval and "
        "chat then use it when given no thresholds",
    )
    seed: int = option(0, "seed of the bootstrap resamples")
    source_column: str | None = _source_column()
    target_column: str | None = _target_column()
    prefix: str | None = _prefix()
    prompt_template: str | None = _prompt_template()
    chat_template: bool = _chat_template()

    def problems(self) -> Iterator[str]:
        if self.max_drop < 0:
            yield (f"--max-drop must be >= 0 (got {self.max_drop:g})")
        if not 0.5 <= self.confidence < 1:
            yield (f"--confidence must lie in [0.5, 1) (got {self.confidence:g})")
        unknown = [name for name in self.fallback_rule if name not in FALLBACK_RULES]
        if unknown or not self.fallback_rule:
            yield (
                f"unknown fallback rule {', '.join(unknown) or '(none)'}; choose from "
                f"{', '.join(FALLBACK_RULES)}"
            )
        yield from threshold_problems(
            self.rollback_threshold, self.fallback_threshold, fallback_at_most_one=True
        )
