"""Out-of-the-box defaults: the shipped demo pair (data/demo) and the offline gettext-de-en task.

small, large, task = demo_defaults(small=None, large=None, task=None)  # fills the gaps
"""

from __future__ import annotations

import sys
from pathlib import Path

from bild_align.errors import UserError
from bild_align.resources import DEMO_DIR

DEMO_TASK = "gettext-de-en"


def demo_model(role: str) -> str:
    path = Path(DEMO_DIR) / role
    if not (path / "config.json").exists():
        raise UserError(
            f"no model given and the demo {role} model is missing from {path}; pass a model "
            "(a Hub id or a directory), or rebuild the demo pair with `make demo-models`"
        )
    return str(path)


def demo_defaults(**given: str | None) -> dict[str, str]:
    """Fill the missing `small` / `large` / `task` with the demo pair and task, and say so."""
    filled = dict(given)
    used = []
    for key, value in given.items():
        if value is None:
            filled[key] = DEMO_TASK if key == "task" else demo_model(key)
            used.append(f"--{key} {filled[key]}")
    if used:
        print(f"bild-align: using the built-in demo defaults: {' '.join(used)}", file=sys.stderr)
    return filled
