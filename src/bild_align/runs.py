"""Runs that must not write one output twice at once.

    with RunLock(Path("out/.lock"), "calibrate", "--output out"):   # a second one fails at once
        ...

The lock is an exclusive `flock` on a small file; the kernel drops it when the process ends,
however it ends, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

from pathlib import Path

from bild_align.errors import UserError


class RunLock:
    """An exclusive lock on `path`, held by a `bild-align COMMAND` writing `output` (the words
    the refusal names it with, e.g. "--output results/eval.json")."""

    def __init__(self, path: Path, command: str, output: str) -> None:
        self.path = Path(path)
        self.command = command
        self.output = output
        self._handle = None

    def acquire(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UserError(
                f"another `bild-align {self.command}` is writing {self.output} right now; wait "
                "for it to finish (or stop it), then run this command again to resume"
            ) from None
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def probe(self) -> None:
        """Fail now if another run holds the lock (and hold nothing)."""
        if self.path.exists():
            self.acquire().release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
