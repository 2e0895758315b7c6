"""Out-of-the-box defaults: the shipped demo pair (data/demo) and the offline gettext-de-en task,
and the task of the paper's published checkpoints.

    fill_defaults({"large": None, "task": None}, "large", "task")
    # {"large": ".../data/demo/large", "task": "gettext-de-en"}   (and says so on stderr)
    fill_defaults({"large": "kssteven/mT5-large-iwslt2017-de-en", "task": None}, "large", "task")
    # {..., "task": "iwslt2017-de-en"}: the task that checkpoint was fine-tuned on

A missing task is never guessed for any other model: that is a UserError naming the tasks.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bild_align.errors import UserError
from bild_align.resources import DEMO_CAUSAL_DIR, DEMO_DIR

logger = logging.getLogger(__name__)  # notes; the command line shows them on stderr

DEMO_TASK = "gettext-de-en"


def demo_model(role: str, pair: str = "t5") -> str:
    """The shipped demo pair's `role` model: the T5 pair, or with pair="causal" the Llama one."""
    path = Path(DEMO_CAUSAL_DIR if pair == "causal" else DEMO_DIR) / role
    if not (path / "config.json").exists():
        rebuild = "make demo-models-causal" if pair == "causal" else "make demo-models"
        raise UserError(
            f"no model given and the demo {role} model is missing from {path}; pass a model "
            f"(a Hub id or a directory), or rebuild the demo pair with `{rebuild}`"
        )
    return str(path)


def is_demo_model(name: str, role: str) -> bool:
    path = Path(name).expanduser()
    return path.exists() and path.resolve() == (Path(DEMO_DIR) / role).resolve()


def _default_task(models: dict) -> tuple[str, str]:
    """(the task, why) for a pair given without --task."""
    from bild_align.data.tasks import REGISTRY, published_task

    large = models.get("large")
    if large is None or is_demo_model(large, "large"):
        return DEMO_TASK, "demo"
    for name in (large, models.get("small")):
        task = published_task(name)
        if task is not None:
            return task, f"the task {name} was fine-tuned on"
    raise UserError(
        f"--task is needed: {large} is neither the demo pair nor one of the paper's published "
        f"checkpoints; give --task {' | '.join(sorted(REGISTRY))}, or a local "
        ".jsonl/.csv/.parquet file"
    )


def fill_defaults(values: dict, *roles: str) -> dict:
    """`values` with the missing `small` / `large` / `task` filled, saying so on stderr: the
    demo pair's models (the demo small model only beside the demo large one); the task of a
    published checkpoint, or the demo task for the demo pair (any other model needs --task)."""
    filled = dict(values)
    demo, notes = [], []
    for role in ("small", "large"):
        if role in roles and filled.get(role) is None:
            demo.append(role)
    large = filled.get("large")
    if "small" in demo and large is not None and not is_demo_model(large, "large"):
        raise UserError(
            f"--small is needed with --large {large} (the demo pair's small model only goes "
            "with the demo's large model)"
        )
    for role in demo:
        filled[role] = demo_model(role)
    if "task" in roles and filled.get("task") is None:
        filled["task"], why = _default_task(filled)
        if why == "demo":
            demo.append("task")
        else:
            notes.append(f"--task {filled['task']} ({why})")
    if demo:
        given = " ".join(f"--{role} {filled[role]}" for role in demo)
        logger.info("bild-align: using the built-in demo defaults: %s", given)
    for note in notes:
        logger.info("bild-align: using %s", note)
    return filled
