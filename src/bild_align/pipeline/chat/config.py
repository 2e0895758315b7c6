"""`bild-align chat`'s settings: the models, and the console's live settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

from bild_align.core.policies import (
    FALLBACK_RULES,
    FALLBACK_THRESHOLD,
    MAX_SMALL_STEPS,
    ROLLBACK_THRESHOLD,
    fallback_threshold_ok,
    rollback_threshold_ok,
)
from bild_align.options import (
    flags_of,
    name_list,
    option,
    positive_int,
)
from bild_align.pipeline.base_config import (
    _DEMO_MODEL,
    CHAT_OUTPUTS,
    Config,
    _device,
    _dtype,
)


@dataclass
class ChatConfig(Config):
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


# chat's /command -> (the setting it changes, its type, check, the check in words)
CHAT_LIMITS: dict[str, tuple[str, type, Callable[[float], bool], str]] = {
    "rb": ("rollback_threshold", float, rollback_threshold_ok, ">= 0"),
    "fb": ("fallback_threshold", float, fallback_threshold_ok, ">= 0"),
    "steps": ("max_small_steps", int, lambda v: v >= 1, ">= 1"),
    "gamma": ("gamma", int, lambda v: v >= 1, ">= 1"),
    # a cap, so that a typo cannot start minutes of decoding (Ctrl-C also stops one)
    "max": ("max_new_tokens", int, lambda v: 1 <= v <= 4096, "from 1 to 4096"),
    "temperature": ("temperature", float, lambda v: v > 0, "> 0"),
    "top-k": ("top_k", int, lambda v: v >= 0, ">= 0 (0: off)"),
    "top-p": ("top_p", float, lambda v: 0 < v <= 1, "in (0, 1]"),
    "seed": ("seed", int, lambda v: v >= 0, ">= 0"),
}


@dataclass
class ChatSettings(Config):
    """`bild-align chat`'s settings; the console's /commands change them between inputs."""

    rollback_threshold: float = option(
        ROLLBACK_THRESHOLD, "rollback threshold, >= 0", aliases=("--rb",)
    )
    fallback_threshold: float = option(
        FALLBACK_THRESHOLD, "fallback threshold, >= 0", aliases=("--fb",)
    )
    max_small_steps: int = option(
        MAX_SMALL_STEPS, "BiLD's most consecutive small-model tokens", parse=positive_int
    )
    fallback_rule: str = option(
        "max_prob",
        "BiLD's fallback rule: max_prob (the small model's top probability), entropy "
        "(exp(-entropy) of its distribution) or learned (the small model's fallback head)",
        choices=FALLBACK_RULES,
        aliases=("--fallback",),
    )
    gamma: int = option(4, "speculative decoding's draft length", parse=positive_int)
    max_new_tokens: int = option(64, "output length limit", parse=positive_int)
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

    def problems(self) -> Iterator[str]:
        """Each setting outside its range, in words (`check` raises the first)."""
        flags = {f.name: flags_of(f)[-1] for f in fields(self)}  # --rb rather than its long name
        for name, _, valid, words in CHAT_LIMITS.values():
            value = getattr(self, name)
            if not valid(value):
                yield (f"{flags[name]} {value}: must be {words}")
        unknown = [name for name in self.show if name not in CHAT_OUTPUTS]
        if unknown:
            yield (f"--show: unknown output {', '.join(unknown)}; use {', '.join(CHAT_OUTPUTS)}")

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
            f"rb={self.rollback_threshold} fb={self.fallback_threshold} "
            f"steps={self.max_small_steps} fallback={self.fallback_rule} gamma={self.gamma} "
            f"max={self.max_new_tokens} show={','.join(self.show)} {mode}"
        )
