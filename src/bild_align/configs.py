"""The stages' settings: one dataclass per command, one home for every default and its help.

    from bild_align.configs import EvalConfig
    config = EvalConfig(small="S", large="L", task="iwslt2017-de-en", rb=(4.0,))
    run_eval(config)                                   # bild_align.stages.evaluate

The CLI generates each subcommand's options from these fields (`bild_align.options`), and
`build()` (bild_align.recipes) checks values typed on the command line or read from a recipe
against them. Light on purpose: nothing here imports torch. The training recipe, which has its
own YAML file, is `bild_align.recipes.TrainRecipe`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from bild_align.core.policies import (
    FALLBACK_RULES,
    FALLBACK_THRESHOLD,
    MAX_SMALL_STEPS,
    ROLLBACK_THRESHOLD,
)
from bild_align.errors import UserError
from bild_align.options import (
    finite_float,
    name_list,
    nonnegative_int,
    number_list,
    option,
    positive_int,
    positive_int_list,
)

DTYPES = ("float32", "bfloat16", "float16")
DEMO_PAIRS = ("t5", "causal")
MIN_DEMO_ROWS = 10
BASELINES = ("large", "small", "assisted")
CHAT_OUTPUTS = ("bild", "large", "small", "speculative")
OBJECTIVES = ("sequence", "calibrated", "token")
DIVERGENCES = ("forward_kl", "reverse_kl", "tvd", "jsd")

_DEMO_MODEL = "the built-in demo pair's {} model"
_TASK_HELP = (
    "a registered benchmark (iwslt2017-de-en, wmt14-de-en, xsum, cnn_dailymail, gettext-de-en: "
    "built offline from this machine's gettext catalogs) or a local .jsonl/.csv/.parquet file"
)


def _model(role: str) -> str:
    return option(
        help=f"{role} model: Hub id or local directory", default_text=_DEMO_MODEL.format(role)
    )


def _prompt_template() -> str | None:
    return option(
        None,
        "decoder-only models: the prompt around each row's source, with {source} where it goes "
        '(e.g. "Translate German to English:\n{source}\n"); a local file\'s `prompt` column '
        "is used as it is",
        default_text="the task's",
    )


def _chat_template() -> bool:
    return option(
        False,
        "decoder-only models: wrap the prompt in the tokenizer's chat template as a user "
        "turn; generation starts at the assistant turn",
    )


def _dtype() -> str:
    return option("float32", "model dtype", choices=DTYPES)


def _device(note: str = "") -> str:
    return option(
        "auto",
        "torch device, e.g. cpu or cuda:0",
        default_text=f"cuda if available{note}",
    )


# fields that calibrate and eval share
def _task():
    return option(help=_TASK_HELP, default_text="gettext-de-en")


def _max_samples():
    return option(None, "use only the first N rows of the split", parse=positive_int)


def _max_new_tokens():
    return option(
        None,
        "output length limit",
        parse=positive_int,
        default_text="the task's target length, within the model's position table",
    )


def _max_source_length():
    return option(
        None,
        "inputs are truncated to this many tokens",
        parse=positive_int,
        default_text="the task's, within the model's position table",
    )


def _source_column():
    return option(None, "source column of a local file", default_text="source")


def _target_column():
    return option(None, "reference column of a local file", default_text="target, if present")


def _prefix():
    return option(
        None,
        "text put before every source",
        default_text="the task's, e.g. 'summarize: ' for summarization",
    )


@dataclass
class CalibrateConfig:
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


@dataclass
class EvalConfig:
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
        "fallback rule: max_prob (the small model's top probability, the paper's) or entropy "
        "(exp(-entropy) of its distribution)",
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
        BASELINES, "comma-separated: large (always run), small, assisted", parse=name_list
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

    def validate(self) -> None:
        unknown = [name for name in self.baselines if name not in BASELINES]
        if unknown:
            raise UserError(
                f"unknown baseline {', '.join(unknown)}; choose from {', '.join(BASELINES)}"
            )
        numbers = [*self.rb, *self.fb, self.max_drop]
        if not all(isinstance(x, int | float) and math.isfinite(x) for x in numbers):
            raise UserError("--rb, --fb and --max-drop must be finite numbers")
        if not self.rb or any(rb < 0 for rb in self.rb):
            raise UserError("--rb values must be >= 0 (0 is the exact mode)")
        if not self.fb or any(fb < 0 for fb in self.fb):
            raise UserError("--fb values must be >= 0")
        if self.max_drop < 0:
            raise UserError("--max-drop must be >= 0")
        if self.sweep and any(fb > 1 for fb in self.fb):
            raise UserError("in a sweep, --fb values must lie in [0, 1]")
        if not self.sweep and (len(self.rb) > 1 or len(self.fb) > 1):
            raise UserError("several --rb/--fb values need --sweep")
        if self.shared_checks and self.batch_size == 1:
            raise UserError(
                "--shared-checks keeps the rows of a batch in step: give --batch-size N > 1"
            )


@dataclass
class TuneConfig:
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
        "(exp(-entropy) of its distribution)",
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
        "written beside it; an interrupted run resumes from OUTPUT.partial.jsonl",
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

    def validate(self) -> None:
        if self.max_drop < 0:
            raise UserError(f"--max-drop must be >= 0 (got {self.max_drop:g})")
        if not 0.5 <= self.confidence < 1:
            raise UserError(f"--confidence must lie in [0.5, 1) (got {self.confidence:g})")
        unknown = [name for name in self.fallback if name not in FALLBACK_RULES]
        if unknown or not self.fallback:
            raise UserError(
                f"unknown fallback rule {', '.join(unknown) or '(none)'}; choose from "
                f"{', '.join(FALLBACK_RULES)}"
            )
        if not self.rb or any(rb < 0 for rb in self.rb):
            raise UserError("--rb values must be >= 0 (0 is the exact mode)")
        if not self.fb or any(not 0 <= fb <= 1 for fb in self.fb):
            raise UserError("--fb values must lie in [0, 1]")


@dataclass
class BenchConfig:
    """`bild-align bench`: the decoder micro-benchmark on pairs built in code."""

    preset: str = option(
        "t5",
        "model shapes: t5 (6 vs 24 layers, 32k vocab), mt5 (8 vs 24 "
        "layers, 250k vocab, gated), bart (BART-base width, 1 vs 6 decoder layers, 50k "
        "vocab), llama (decoder-only, 4 vs 16 layers, 32k vocab), tiny (smoke test)",
        choices=("t5", "mt5", "bart", "llama", "tiny"),
    )
    eps: tuple[float, ...] = option(
        (0.0, 0.01, 0.02),
        "comma-separated scales of the large "
        "model's extra layers, one agreement level each; 0 = full "
        "agreement",
        parse=number_list,
    )
    examples: int = option(8, "random inputs per level", parse=positive_int)
    max_new_tokens: int = option(48, "tokens generated per input", parse=positive_int)
    tune_examples: int = option(
        2, "inputs used to pick each tuned method's fastest setting", parse=positive_int
    )
    device: str = _device()
    dtype: str = _dtype()
    seed: int = option(0, "seed for models and inputs")
    output: str | None = option("results/bench_decoder.json", "where to write the JSON results")
    assistant_tokens: tuple[int, ...] = option(
        (4, 8, 16), "assisted generation's candidate draft lengths", command_line=False
    )
    small_steps: tuple[int, ...] = option(
        (4, 8, 16, 32), "exact BiLD's candidate max_small_steps", command_line=False
    )
    exact_fallbacks: tuple[float, ...] = option(
        (0.0, 0.3), "exact BiLD's candidate fallback thresholds", command_line=False
    )
    gammas: tuple[int, ...] = option(
        (2, 4, 8, 16), "speculative decoding's candidate draft lengths", command_line=False
    )
    sampling: bool = option(
        False, "add sampling rows (large model, speculative sampling and BiLD, temperature 1)"
    )
    batch_sizes: tuple[int, ...] = option(
        (1, 4, 8),
        "batch sizes; beyond 1, the large model's batched generate, exact BiLD, speculative "
        "decoding and BiLD (with --sampling, their sampled rows too) each decode that many "
        "inputs per call (throughput rows)",
        parse=positive_int_list,
    )

    def validate(self) -> None:
        if not self.eps or any(eps < 0 for eps in self.eps):
            raise UserError("--eps needs one or more numbers >= 0")
        if 1 not in self.batch_sizes:
            raise UserError("--batch-sizes must include 1 (the latency rows every level has)")
        larger = [size for size in self.batch_sizes if size > self.examples]
        if larger:
            raise UserError(
                f"--batch-sizes {','.join(map(str, larger))}: a batch needs that many inputs, "
                f"but --examples is {self.examples}; raise --examples or lower the batch sizes"
            )


@dataclass
class ChatConfig:
    """`bild-align chat`'s models and display; `ChatSettings` holds what /commands change."""

    small: str = option(help="small model", default_text=_DEMO_MODEL.format("small"))
    large: str = option(help="large model", default_text=_DEMO_MODEL.format("large"))
    prefix: str = option("", "text put before every input, e.g. 'summarize: '", default_text="none")
    prompt_template: str | None = option(
        None,
        "decoder-only models: the prompt around each input, with {source} where it goes",
        default_text="the input as it is; the causal demo pair's own template for that pair",
    )
    color: str = option(
        "auto",
        "colour the small model's tokens (auto: on a terminal)",
        choices=("auto", "always", "never"),
    )
    dtype: str = _dtype()
    device: str = _device()


# chat's /command -> (type, check, the check in words)
CHAT_LIMITS: dict[str, tuple[type, Callable[[float], bool], str]] = {
    "rb": (float, lambda v: v >= 0, ">= 0"),
    "fb": (float, lambda v: v >= 0, ">= 0"),
    "steps": (int, lambda v: v >= 1, ">= 1"),
    "gamma": (int, lambda v: v >= 1, ">= 1"),
    "max": (int, lambda v: v >= 1, ">= 1"),
    "temperature": (float, lambda v: v > 0, "> 0"),
    "top-k": (int, lambda v: v >= 0, ">= 0 (0: off)"),
    "top-p": (float, lambda v: 0 < v <= 1, "in (0, 1]"),
    "seed": (int, lambda v: v >= 0, ">= 0"),
}


@dataclass
class ChatSettings:
    """`bild-align chat`'s settings; the console's /commands change them between inputs."""

    rb: float = option(ROLLBACK_THRESHOLD, "rollback threshold, >= 0")
    fb: float = option(FALLBACK_THRESHOLD, "fallback threshold, >= 0")
    steps: int = option(
        MAX_SMALL_STEPS,
        "BiLD's most consecutive small-model tokens",
        flag="max_small_steps",
        parse=positive_int,
    )
    fallback: str = option(
        "max_prob",
        "BiLD's fallback rule: max_prob (the small model's top probability) or entropy "
        "(exp(-entropy) of its distribution)",
        choices=FALLBACK_RULES,
    )
    gamma: int = option(4, "speculative decoding's draft length", parse=positive_int)
    max: int = option(64, "output length limit", flag="max_new_tokens", parse=positive_int)
    show: tuple[str, ...] = option(
        ("bild", "large"), "outputs to show: " + ",".join(CHAT_OUTPUTS), parse=name_list
    )
    sample: bool = option(False, "sample instead of greedy")
    temperature: float = option(1.0, "sampling temperature, > 0")
    top_k: int = option(0, "top-k filter (0: off)")
    top_p: float = option(1.0, "nucleus filter, in (0, 1] (1: off)")
    seed: int = option(0, "sampling seed")
    vocab_size: int | None = option(
        None, "the tokenizer's length (models may pad their embeddings)", command_line=False
    )

    def validate(self) -> None:
        """Raise UserError naming the first setting outside its range."""
        for name, (_, valid, words) in CHAT_LIMITS.items():
            value = getattr(self, name.replace("-", "_"))
            if not valid(value):
                raise UserError(f"--{name} {value}: must be {words}")
        unknown = [name for name in self.show if name not in CHAT_OUTPUTS]
        if unknown:
            raise UserError(
                f"--show: unknown output {', '.join(unknown)}; use {', '.join(CHAT_OUTPUTS)}"
            )

    def sampling(self) -> dict:
        return dict(
            do_sample=self.sample,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            seed=self.seed,
        )

    def describe(self) -> str:
        mode = (
            f"sampling (temperature {self.temperature}, top-k {self.top_k}, top-p "
            f"{self.top_p}, seed {self.seed})"
            if self.sample
            else "greedy"
        )
        return (
            f"rb={self.rb} fb={self.fb} steps={self.steps} fallback={self.fallback} "
            f"gamma={self.gamma} "
            f"max={self.max} show={','.join(self.show)} {mode}"
        )


@dataclass
class DemoConfig:
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
    rb: float = option(6.0, "rollback threshold of the BiLD rows")
    fb: float = option(0.3, "fallback threshold of the BiLD rows")
    sweep_rb: tuple[float, ...] = option(
        (3.0, 4.0, 6.0, 8.0), "rollback thresholds of the sweep", parse=number_list
    )
    sweep_fb: tuple[float, ...] = option(
        (0.2, 0.3, 0.4, 0.5), "fallback thresholds of the sweep", parse=number_list
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

    def validate(self) -> None:
        thresholds = (self.rb, *self.sweep_rb), (self.fb, *self.sweep_fb)
        if any(rb < 0 for rb in thresholds[0]) or not all(0 <= fb <= 1 for fb in thresholds[1]):
            raise UserError("rollback thresholds must be >= 0 and fallback ones within [0, 1]")
        if not 0 <= self.on_policy_fraction <= 1:
            raise UserError("--on-policy-fraction must lie within [0, 1]")
        if not self.sweep_rb or not self.sweep_fb:
            raise UserError("--sweep-rb and --sweep-fb need one or more numbers")
        if self.calibration_rows is not None and self.calibration_rows < MIN_DEMO_ROWS:
            raise UserError(
                f"--calibration-rows {self.calibration_rows}: the demo needs at least "
                f"{MIN_DEMO_ROWS} (a fifth of them is held out to evaluate the alignment)"
            )


@dataclass
class ExportGenerateConfig:
    """`bild-align export-generate DIR`: BiLD as a transformers custom_generate repository."""

    output: str = option(help="the folder to write", command_line=False)
    push_to_hub: str | None = option(
        None,
        "also upload the folder to this Hub model repository (token from HF_TOKEN or `hf auth "
        "login`); then `generate(..., custom_generate=REPO, trust_remote_code=True)` loads it",
    )
    private: bool = option(False, "with --push-to-hub: create the repository as private")

    def validate(self) -> None:
        if self.private and not self.push_to_hub:
            raise UserError("--private goes with --push-to-hub REPO")


@dataclass
class PushConfig:
    """`bild-align push MODEL_DIR --repo REPO`: an aligned model and its card to the Hub."""

    model_dir: str = option(help="the aligned model's folder", command_line=False)
    repo: str = option(help="the Hub model repository, e.g. me/t5-small-aligned-to-t5-large")
    private: bool = option(False, "create the repository as private")


__all__ = [
    "BASELINES",
    "BenchConfig",
    "CalibrateConfig",
    "ChatConfig",
    "ChatSettings",
    "DemoConfig",
    "EvalConfig",
    "ExportGenerateConfig",
    "PushConfig",
]
