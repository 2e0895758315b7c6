"""What every stage's settings share: the names of choices, the option fields several stages
have, and the validation protocol (`Config.problems`, `check`)."""

from __future__ import annotations

from collections.abc import Iterator

from bild_align.errors import UserError
from bild_align.options import option, positive_int

DTYPES = ("float32", "bfloat16", "float16")
DEMO_PAIRS = ("t5", "causal")
MIN_DEMO_ROWS = 10
# engine: the large model alone on bild-align's own decoder (what BiLD's decisions add to it)
BASELINES = ("large", "engine", "small", "assisted")
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


class Config:
    """Every stage's settings: `problems()` yields what is outside its range, in words."""

    def problems(self) -> Iterator[str]:
        return iter(())


def check(config: Config, source: str | None = None) -> None:
    """Raise UserError with the first of `config.problems()`, prefixed by `source` (a recipe
    file) when given; later problems are not computed (they may assume earlier ones absent)."""
    problem = next(iter(config.problems()), None)
    if problem is not None:
        raise UserError(problem if source is None else f"{source}: {problem}")
