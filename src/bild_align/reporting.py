"""What the commands tell their user, through one reporter: the command line shows it; a
command called from Python prints nothing unless asked (its results are what it returns).

    report(f"resuming: {kept} of {total} rows kept")        # a line of the command's output
    report("bild-align: warning: ...", stderr=True)         # a warning or a note
    with reporting():                                      # what `bild-align` does: show them
        run_eval(config)

Out of a `reporting()` block, standard-output lines are dropped and standard-error ones go to
the `bild_align` logger as warnings (Python's logging shows them unless configured otherwise).
Progress bars are tqdm's, on standard error, as before.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar

_SHOWN: ContextVar[bool] = ContextVar("bild_align_reports_shown", default=False)
logger = logging.getLogger("bild_align")


def report(message: str = "", *, stderr: bool = False) -> None:
    if _SHOWN.get():
        print(message, file=sys.stderr if stderr else sys.stdout, flush=True)
    elif stderr:
        logger.warning(message)


@contextlib.contextmanager
def reporting(shown: bool = True) -> Iterator[None]:
    token = _SHOWN.set(shown)
    try:
        yield
    finally:
        _SHOWN.reset(token)
