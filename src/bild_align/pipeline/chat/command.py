"""Interactive console: type an input, see BiLD's output beside the large model, the small model
and speculative decoding, with tokens/s, time and decoder statistics.

    bild-align chat --small S --large L           # then type text, or /help for commands
    run_chat(ChatConfig(small="S", large="L"), ChatSettings(), given=set())   # the command
    Console(small, large, tokenizer, output=sys.stdout).run(sys.stdin)   # chat/console.py

Tokens drafted by the small model and kept are shown in green, tokens produced or corrected by
the large model in the default colour (when colour is on). Given no BiLD setting (rb, fb,
steps, fallback), chat uses the policy `bild-align tune --save` stored beside the small model
for this large model, and says so.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable
from pathlib import Path

from bild_align.configs import ChatConfig, ChatSettings, check
from bild_align.data.prompts import check_template
from bild_align.errors import UserError
from bild_align.models.fallback_heads import HEAD_FILE, load_fallback_head
from bild_align.models.loading import load_pair
from bild_align.models.saved_policy import policy_path, saved_policy_for
from bild_align.pipeline.chat.console import Console
from bild_align.reporting import report

# what a saved policy sets
POLICY_SETTINGS = ("rollback_threshold", "fallback_threshold", "max_small_steps", "fallback_rule")


def _prompt_template(config: ChatConfig, large) -> str | None:
    """The template given, or for the shipped decoder-only demo pair the one it was trained
    with (said on stderr); decoder-only models only."""
    from bild_align.data.tasks import get_task
    from bild_align.resources import DEMO_CAUSAL_DIR

    if large.config.is_encoder_decoder:
        if config.prompt_template is not None:
            raise UserError("--prompt-template is for decoder-only models; use --prefix")
        return None
    demo = Path(config.large).expanduser().resolve() == (DEMO_CAUSAL_DIR / "large").resolve()
    if config.prompt_template is None and demo:
        template = get_task("gettext-de-en").prompt_template
        report(f"bild-align: the demo pair's prompt template: {template!r}", stderr=True)
        return template
    return config.prompt_template


def run_chat(
    config: ChatConfig, settings: ChatSettings, given: set[str], lines: Iterable[str] | None = None
) -> None:
    """Load the pair and run the console on `lines` (default: the terminal, or standard input
    when it is not one). `given`: the settings the user typed."""
    check(settings)  # before minutes of model loading
    check_template(config.prompt_template)
    pair = load_pair(config.small, config.large, dtype=config.dtype, device=config.device)
    small, large, tokenizer = pair.small, pair.large, pair.tokenizer
    large_revision, small_revision = pair.large_revision, pair.small_revision
    settings.vocab_size = pair.vocab_size
    if not given & set(POLICY_SETTINGS):
        saved = saved_policy_for(config.small, large_revision, settings.vocab_size)
        if saved is not None:
            policy = saved[0]
            for name in POLICY_SETTINGS:
                setattr(settings, name, getattr(policy, name))
            report(
                f"bild-align: using the tuned policy in {policy_path(config.small)}: "
                f"rb={policy.rollback_threshold:g} fb={policy.fallback_threshold:g} "
                f"steps={policy.max_small_steps} fallback={policy.fallback_rule}",
                stderr=True,
            )
    head = None
    if settings.fallback_rule == "learned":
        head = load_fallback_head(config.small, small_revision)
    elif (Path(config.small).expanduser() / HEAD_FILE).is_file():  # for /fallback learned
        try:
            head = load_fallback_head(config.small, small_revision)
        except UserError as error:  # a head this session does not need
            report(f"note: /fallback learned is unavailable: {error}", stderr=True)
    interactive = lines is None and sys.stdin.isatty()
    colour = config.color == "always" or (config.color == "auto" and sys.stdout.isatty())
    console = Console(
        small,
        large,
        tokenizer,
        sys.stdout,
        colour=colour,
        prefix=config.prefix,
        prompt_template=_prompt_template(config, large),
        settings=settings,
        fallback_head=head,
    )
    if lines is None:
        lines = _prompted_lines() if interactive else sys.stdin
    with contextlib.suppress(EOFError):  # Ctrl-D at the prompt ends the session
        console.run(lines, interactive=interactive)


def _prompted_lines():
    while True:
        yield input("> ")
