"""The chat console: type an input, see BiLD's output beside the large model, the small model
and speculative decoding, with tokens/s, time and decoder statistics; /commands change the
settings. What it shows goes to the `output` stream it is given.

    Console(small, large, tokenizer, output=sys.stdout).run(sys.stdin)

Tokens drafted by the small model and kept are shown in green, tokens produced or corrected by
the large model in the default colour (when colour is on).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from typing import TextIO

import torch

from bild_align.configs import CHAT_LIMITS, CHAT_OUTPUTS, ChatSettings
from bild_align.core.decoding import autoregressive_generate, bild_generate, speculative_generate
from bild_align.core.policies import FALLBACK_RULES
from bild_align.measure.timing import timed
from bild_align.models.loading import position_limit

METHODS = CHAT_OUTPUTS
GREEN, RESET = "\033[32m", "\033[0m"

HELP = """commands (values apply to the next inputs):
  /rb X        rollback threshold (0 = exact)      /fb X      fallback threshold
  /steps N     BiLD's max consecutive small tokens /gamma N   speculative draft length
  /fallback R  BiLD's fallback rule: {rules}
  /max N       max new tokens                      /show A,B  outputs to show: {methods}
  /sample on|off   sampling instead of greedy      /temperature X  /top-k N  /top-p X  /seed N
  /settings    show the settings                   /help      this text      /quit  leave
anything else is an input to decode""".format(
    methods=",".join(METHODS), rules=" or ".join(FALLBACK_RULES)
)


class Console:
    def __init__(
        self,
        small,
        large,
        tokenizer,
        output: TextIO,
        colour: bool = False,
        prefix: str = "",
        settings: ChatSettings | None = None,
        prompt_template: str | None = None,
        fallback_head=None,
    ) -> None:
        self.small, self.large, self.tokenizer = small, large, tokenizer
        self.output = output
        self.colour = colour
        self.prefix = prefix
        self.prompt_template = prompt_template
        self.settings = settings or ChatSettings()
        self.fallback_head = fallback_head  # the learned rule's, when the small model has one

    def say(self, text: str = "") -> None:
        self.output.write(text + "\n")
        self.output.flush()

    # -- commands --

    def command(self, line: str) -> bool:
        """Apply one /command; False when the console should stop."""
        try:
            name, *values = shlex.split(line[1:]) or [""]
        except ValueError as error:  # e.g. an unbalanced quote
            self.say(f"cannot read that command ({error}); /help lists the commands")
            return True
        settings = self.settings
        if name in ("quit", "exit", "q"):
            return False
        if name in ("help", "h", "?"):
            self.say(HELP)
        elif name == "settings":
            self.say(settings.describe())
        elif name == "show":
            chosen = tuple(m.strip() for m in ",".join(values).split(",") if m.strip())
            unknown = [m for m in chosen if m not in METHODS]
            if unknown or not chosen:
                self.say(
                    f"unknown output {', '.join(unknown) or '(none)'}; choose from "
                    f"{', '.join(METHODS)}"
                )
            else:
                settings.show = chosen
                self.say(settings.describe())
        elif name == "sample":
            if values not in (["on"], ["off"]):
                self.say("use /sample on or /sample off")
            else:
                settings.sample = values == ["on"]
                self.say(settings.describe())
        elif name == "fallback":
            if len(values) != 1 or values[0] not in FALLBACK_RULES:
                self.say(f"use /fallback {' or /fallback '.join(FALLBACK_RULES)}")
            elif values[0] == "learned" and self.fallback_head is None:
                self.say(
                    "the small model has no fallback head; train one with `bild-align train "
                    "--fallback-head-only`"
                )
            else:
                settings.fallback_rule = values[0]
                self.say(settings.describe())
        elif name in CHAT_LIMITS:
            self._set_number(name, values)
        else:
            self.say(f"unknown command /{name}; /help lists the commands")
        return True

    def _set_number(self, name: str, values: list[str]) -> None:
        field, kind, valid, words = CHAT_LIMITS[name]
        try:
            value = kind(values[0]) if len(values) == 1 else None
        except ValueError:
            value = None
        if value is None or not valid(value):
            self.say(f"/{name} needs one {'integer' if kind is int else 'number'}: {words}")
            return
        setattr(self.settings, field, value)
        self.say(self.settings.describe())

    # -- decoding --

    def _runners(self, max_new: int) -> dict[str, Callable]:
        s = self.settings
        return {
            "bild": lambda ids, mask: bild_generate(
                self.small,
                self.large,
                ids,
                mask,
                rollback_threshold=s.rollback_threshold,
                fallback_threshold=s.fallback_threshold,
                max_small_steps=s.max_small_steps,
                fallback_rule=s.fallback_rule,
                fallback_head=self.fallback_head,
                max_new_tokens=max_new,
                vocab_size=s.vocab_size,
                **s.sampling(),
            ),
            "large": lambda ids, mask: autoregressive_generate(
                self.large, ids, mask, max_new_tokens=max_new, **s.sampling()
            ),
            "small": lambda ids, mask: autoregressive_generate(
                self.small, ids, mask, max_new_tokens=max_new, **s.sampling()
            ),
            "speculative": lambda ids, mask: speculative_generate(
                self.small,
                self.large,
                ids,
                mask,
                gamma=s.gamma,
                max_new_tokens=max_new,
                vocab_size=s.vocab_size,
                **s.sampling(),
            ),
        }

    def _render(self, new_tokens: list[int], from_small: list[bool]) -> str:
        """The output text; with colour, the small model's kept tokens in green."""
        if not self.colour:
            return self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        pieces, previous = [], ""
        for end, small in enumerate(from_small, start=1):
            text = self.tokenizer.decode(new_tokens[:end], skip_special_tokens=True)
            piece, previous = text[len(previous) :], text
            pieces.append(f"{GREEN}{piece}{RESET}" if small and piece else piece)
        return "".join(pieces)

    def _position_limit(self) -> int | None:
        """The fewest positions either model can embed (BART-family tables), or None."""
        limits = [position_limit(model) for model in (self.small, self.large)]
        limits = [limit for limit in limits if limit]
        return min(limits) if limits else None

    def decode(self, text: str) -> None:
        limit = self._position_limit()
        text = self.prefix + text
        if self.prompt_template:  # a decoder-only model's prompt around the input
            text = self.prompt_template.replace("{source}", text)
        batch = self.tokenizer(text, return_tensors="pt")
        max_new = self.settings.max_new_tokens
        if limit is not None:
            length = batch.input_ids.shape[1]
            if length > limit:  # cut as eval cuts (the tokenizer keeps its closing token)
                batch = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=limit)
                self.say(f"note: the input is cut to {limit} of its {length} tokens (the models'")
                self.say("      position table; eval truncates the same way)")
            if max_new > limit - 1:
                max_new = limit - 1
                self.say(f"note: at most {max_new} new tokens fit the models' position table")
        ids = batch.input_ids.to(self.large.device)
        mask = batch.attention_mask.to(self.large.device)
        runners = self._runners(max_new)
        width = max(len(name) for name in self.settings.show)
        for name in self.settings.show:
            seconds, out = timed(lambda r=runners[name]: r(ids, mask), self.large.device)
            stats = out.stats
            prefix_length = out.sequences.shape[1] - stats.generated
            new_tokens = out.sequences[0, prefix_length:].tolist()
            rate = stats.generated / seconds if seconds > 0 else float("inf")
            details = f"{stats.generated} tokens, {seconds * 1000:.1f} ms, {rate:.0f} tokens/s"
            if name in ("bild", "speculative"):
                details += (
                    f", large calls/token {stats.large_calls_per_token:.2f}, small "
                    f"tokens {stats.small_accepted}, fallbacks {stats.fallbacks}, "
                    f"rollbacks {stats.rollbacks}"
                )
            self.say(f"{name:<{width}}  {self._render(new_tokens, out.from_small[0])}")
            self.say(f"{'':<{width}}  ({details})")

    def run(self, lines: Iterable[str], interactive: bool = False) -> None:
        if interactive:
            legend = f" ({GREEN}green{RESET}: kept small-model tokens)" if self.colour else ""
            self.say(
                f"bild-align chat: {self.settings.describe()}{legend}\n/help lists the "
                "commands, /quit leaves"
            )
        for line in lines:
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    break
                continue
            try:
                with torch.inference_mode():
                    self.decode(line)
            except ValueError as error:  # e.g. settings the decoder refuses
                self.say(f"error: {error}")
            except KeyboardInterrupt:
                if not interactive:
                    raise
                self.say("\n(stopped; type the next input, or /quit)")
