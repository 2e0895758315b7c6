"""`bild-align eval` and `bild-align tune`: the settings of measuring a pair."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from bild_align.configs.common import (
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
from bild_align.core.policies import (
    FALLBACK_RULES,
    FALLBACK_THRESHOLD,
    MAX_SMALL_STEPS,
    ROLLBACK_THRESHOLD,
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


@dataclass
class EvalConfig(Config):
    """`bild-align eval`: BiLD beside the baselines on the same examples; sweeps."""

    small: str = _model("small")
    large: str = _model("large")
    task: str = _task()
    split: str = option("validation", "benchmark split")
    max_samples: int | None = _max_samples()
    rb: tuple[float, ...] = option(
        (ROLLBACK_THRESHOLD,),
        "rollback threshold(s), >= 0; 0 is the exact mode (not with --reference-compat, "
        "which leaves the drafted tail unchecked as the original code does)",
        parse=number_list,
    )
    fb: tuple[float, ...] = option(
        (FALLBACK_THRESHOLD,), "fallback threshold(s), in [0, 1] for sweeps", parse=number_list
    )
    sweep: bool = option(False, "evaluate every (rb, fb) pair of the lists")
    max_small_steps: int = option(
        MAX_SMALL_STEPS, "most consecutive small-model tokens", parse=positive_int
    )
    fallback: str = option(
        "max_prob",
        "fallback rule: max_prob (the small model's top probability, the paper's), entropy "
        "(exp(-entropy) of its distribution) or learned (the fallback head beside the small "
        "model, from `bild-align train --fallback-head-only`)",
        choices=FALLBACK_RULES,
    )
    saved_policy: bool = option(
        False,
        "use the policy `bild-align tune --save` stored beside the small model for this large "
        "model instead of rb, fb, max_small_steps and fallback (the command line sets it when "
        "none of them is given)",
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
        numbers = [*self.rb, *self.fb, self.max_drop]
        if not all(isinstance(x, int | float) and math.isfinite(x) for x in numbers):
            yield ("--rb, --fb and --max-drop must be finite numbers")
        if not self.rb or any(rb < 0 for rb in self.rb):
            yield ("--rb values must be >= 0 (0 is the exact mode)")
        if not self.fb or any(fb < 0 for fb in self.fb):
            yield ("--fb values must be >= 0")
        if self.max_drop < 0:
            yield ("--max-drop must be >= 0")
        if self.sweep and any(fb > 1 for fb in self.fb):
            yield ("in a sweep, --fb values must lie in [0, 1]")
        if not self.sweep and (len(self.rb) > 1 or len(self.fb) > 1):
            yield ("several --rb/--fb values need --sweep")
        if self.shared_checks and self.batch_size == 1:
            yield ("--shared-checks keeps the rows of a batch in step: give --batch-size N > 1")


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
    fallback: tuple[str, ...] = option(
        FALLBACK_RULES,
        "fallback rules searched: max_prob (the small model's top probability), entropy "
        "(exp(-entropy) of its distribution), learned (the small model's fallback head; left "
        "out when it has none)",
        parse=name_list,
    )
    rb: tuple[float, ...] = option(
        (0.0, 2.0, 4.0, 8.0), "the coarse grid's rollback thresholds", parse=number_list
    )
    fb: tuple[float, ...] = option(
        (0.05, 0.1, 0.2, 0.4), "the coarse grid's fallback thresholds", parse=number_list
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
        unknown = [name for name in self.fallback if name not in FALLBACK_RULES]
        if unknown or not self.fallback:
            yield (
                f"unknown fallback rule {', '.join(unknown) or '(none)'}; choose from "
                f"{', '.join(FALLBACK_RULES)}"
            )
        if not self.rb or any(rb < 0 for rb in self.rb):
            yield ("--rb values must be >= 0 (0 is the exact mode)")
        if not self.fb or any(not 0 <= fb <= 1 for fb in self.fb):
            yield ("--fb values must lie in [0, 1]")
