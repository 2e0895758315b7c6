"""`bild-align eval`: the settings of measuring a pair."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from bild_align.core.policies import (
    FALLBACK_RULES,
    FALLBACK_THRESHOLD,
    MAX_SMALL_STEPS,
    ROLLBACK_THRESHOLD,
    threshold_problems,
)
from bild_align.options import (
    name_list,
    number_list,
    option,
    positive_int,
)
from bild_align.pipeline.base_config import (
    BASELINES,
    Config,
    _chat_template,
    _device,
    _dtype,
    _max_new_tokens,
    _max_samples,
    _max_source_length,
    _model,
    _prefix,
    _prompt_template,
    _source_column,
    _target_column,
    _task,
)


@dataclass
class EvalConfig(Config):
    """`bild-align eval`: BiLD beside the baselines on the same examples; sweeps."""

    small: str = _model("small")
    large: str = _model("large")
    task: str = _task()
    split: str = option("validation", "benchmark split")
    max_samples: int | None = _max_samples()
    rollback_threshold: tuple[float, ...] = option(
        (ROLLBACK_THRESHOLD,),
        "rollback threshold(s), >= 0; 0 is the exact mode (not with --reference-compat, "
        "which leaves the drafted tail unchecked as the original code does)",
        parse=number_list,
        aliases=("--rb",),
    )
    fallback_threshold: tuple[float, ...] = option(
        (FALLBACK_THRESHOLD,),
        "fallback threshold(s), in [0, 1] for sweeps",
        parse=number_list,
        aliases=("--fb",),
    )
    sweep: bool = option(False, "evaluate every (rb, fb) pair of the lists")
    max_small_steps: int = option(
        MAX_SMALL_STEPS, "most consecutive small-model tokens", parse=positive_int
    )
    fallback_rule: str = option(
        "max_prob",
        "fallback rule: max_prob (the small model's top probability, the paper's), entropy "
        "(exp(-entropy) of its distribution) or learned (the fallback head beside the small "
        "model, from `bild-align train --fallback-head-only`)",
        choices=FALLBACK_RULES,
        aliases=("--fallback",),
    )
    saved_policy: bool = option(
        False,
        "use the policy `bild-align tune --save` stored beside the small model for this large "
        "model instead of the thresholds, max_small_steps and the fallback rule (the command "
        "line sets it when none of them is given)",
        command_line=False,
    )
    max_new_tokens: int | None = _max_new_tokens()
    max_source_length: int | None = _max_source_length()
    baselines: tuple[str, ...] = option(
        BASELINES,
        "comma-separated: large (transformers' generate; always run), engine (the large model "
        "alone on bild-align's decoder: what BiLD's decisions add to a faster decoder), small, "
        "assisted",
        parse=name_list,
    )
    reference_compat: bool = option(False, "reproduce the original BiLD implementation's decisions")
    batch_size: int = option(
        1,
        "inputs per call: 1 measures latency (one input at a time); N > 1 measures throughput "
        "(every method decodes N inputs per call; tokens/s and speedup against the large "
        "model's batched generate; the assisted baseline, batch-1 only in transformers, is "
        "left out)",
        parse=positive_int,
    )
    shared_checks: bool = option(
        False,
        "with --batch-size N > 1: check every row holding drafts whenever one row needs a "
        "check, so the rows stay in step and each large-model pass serves all of them (rows "
        "then no longer decide exactly as alone; rb=0 stays exact)",
    )
    max_drop: float = option(
        1.0,
        "with --sweep: report the fastest setting whose quality is "
        "at most this many points below the large model's",
    )
    dtype: str = _dtype()
    device: str = _device()
    output: str = option(
        "results/eval.json",
        "results JSON; a sweep adds .csv and .png "
        "beside it, and an interrupted run resumes from OUTPUT.partial.jsonl",
    )
    source_column: str | None = _source_column()
    target_column: str | None = _target_column()
    prefix: str | None = _prefix()
    prompt_template: str | None = _prompt_template()
    chat_template: bool = _chat_template()

    def problems(self) -> Iterator[str]:
        unknown = [name for name in self.baselines if name not in BASELINES]
        if unknown:
            yield (f"unknown baseline {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
        numbers = [*self.rollback_threshold, *self.fallback_threshold, self.max_drop]
        if not all(isinstance(x, int | float) and math.isfinite(x) for x in numbers):
            yield ("--rb, --fb and --max-drop must be finite numbers")
        yield from threshold_problems(
            self.rollback_threshold, self.fallback_threshold, fallback_at_most_one=self.sweep
        )
        if self.max_drop < 0:
            yield ("--max-drop must be >= 0")
        if not self.sweep and (
            len(self.rollback_threshold) > 1 or len(self.fallback_threshold) > 1
        ):
            yield ("several --rb/--fb values need --sweep")
        if self.shared_checks and self.batch_size == 1:
            yield ("--shared-checks keeps the rows of a batch in step: give --batch-size N > 1")
