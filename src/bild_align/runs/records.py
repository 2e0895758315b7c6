"""A run's record: its identity, its lock and what it resumes from, for every stage that
writes as it goes (calibrate, train, eval, tune).

    with output_lock("eval", config.output):          # a second run on one output fails at once
        log = PartialLog(config.output, "the finished examples of an interrupted eval")
        finished, damaged = log.open(fingerprint)     # resumes the same run; refuses another's
        log.append({"ids": [...], "runs": [...]})     # each finished unit, flushed to disk
        log.finish()                                  # results written: the log goes
    changed = recorded_differences(run_file, fingerprint, fix)   # calibrate's and train's record

A fingerprint is a JSON-able dict of everything that determines the output; a run resumes
only from a record with the same one. The lock is an exclusive `flock` on a small file; the
kernel drops it when the process ends, however it ends, so a crashed run never leaves a stale
lock behind.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from bild_align.core.policies import EARLIER_NAMES
from bild_align.errors import UserError
from bild_align.runs.files import (
    append_jsonl,
    differing_keys,
    read_json_file,
    read_jsonl,
    write_text_atomic,
)


def current_names(fingerprint: object) -> object:
    """A recorded fingerprint with the settings' earlier names (rb, fb, fallback, ...) as
    today's, so that a run recorded before the renaming resumes."""
    if not isinstance(fingerprint, dict):
        return fingerprint
    return {
        EARLIER_NAMES[key]
        if key in EARLIER_NAMES and EARLIER_NAMES[key] not in fingerprint
        else key: value
        for key, value in fingerprint.items()
    }


def recorded_differences(run_file: Path, fingerprint: dict, fix: str) -> list[str]:
    """The keys in which the run recorded in `run_file` (a JSON object with a "fingerprint")
    differs from `fingerprint`; none when there is no record. A damaged record names `fix`."""
    if not run_file.is_file():
        return []
    record = read_json_file(run_file, fix)
    if not isinstance(record, dict):
        raise UserError(f"{run_file} is damaged (not a run record); {fix}")
    recorded = current_names(record.get("fingerprint", {}))
    return differing_keys(recorded, json.loads(json.dumps(fingerprint)))


def partial_path(output: str | os.PathLike) -> Path:
    """Where an eval or tune keeps its finished work until its results are written."""
    output = Path(output).expanduser()
    return output.with_name(output.name + ".partial.jsonl")


def holds_partial_log(path: Path) -> bool:
    """Whether `path` is a PartialLog (its first line a fingerprint), which may be replaced."""
    try:
        with open(path, "rb") as handle:
            first = json.loads(handle.readline())
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and "fingerprint" in first


class PartialLog:
    """OUTPUT.partial.jsonl: the run's fingerprint on the first line, then one line per
    finished unit of work; `what` names its content in a refusal ("an interrupted tune")."""

    def __init__(self, output: str | os.PathLike, what: str) -> None:
        self.path, self.what = partial_path(output), what
        self.header: dict = {}

    def open(self, fingerprint: dict) -> tuple[list, int]:
        """The finished records of an interrupted run with this fingerprint (a new log when
        there is none), and how many lines could not be read (dropped from the log, so that
        appends never continue a torn line); another run's log is refused."""
        self.header = {"fingerprint": json.loads(json.dumps(fingerprint))}
        records, unreadable = read_jsonl(self.path)
        if not records:
            self.path.unlink(missing_ok=True)
            append_jsonl(self.path, self.header)
            return [], 0
        if not (isinstance(records[0], dict) and "fingerprint" in records[0]):
            raise UserError(
                f"{self.path} holds something other than bild-align's partial results; move it "
                "away or choose another --output"
            )
        recorded = current_names(records[0]["fingerprint"])
        if recorded != self.header["fingerprint"]:
            differing = differing_keys(recorded, self.header["fingerprint"])
            raise UserError(
                f"{self.path} holds {self.what} with other settings "
                f"({', '.join(differing) or 'its record'}); run that command again to finish it, "
                "choose another --output, or delete the file"
            )
        if unreadable:
            self.rewrite(records[1:])
        return records[1:], len(unreadable)

    def rewrite(self, kept: list) -> None:
        """Keep only `kept` (in order), so that appends continue a clean file."""
        lines = [self.header, *kept]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in lines))

    def append(self, record) -> None:
        append_jsonl(self.path, record)

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def output_lock(command: str, output: str | os.PathLike) -> RunLock:
    """The lock beside `--output OUTPUT` that keeps two runs from writing it at once."""
    path = Path(output).expanduser()
    return RunLock(path.with_name(f".{path.name}.lock"), command, f"--output {output}")


class RunLock:
    """An exclusive lock on `path`, held by a `bild-align COMMAND` writing `output` (the words
    the refusal names it with, e.g. "--output results/eval.json"). Released, it leaves nothing
    behind: its file goes, and so does the folder acquiring it created if nothing else came."""

    def __init__(self, path: Path, command: str, output: str) -> None:
        self.path = Path(path)
        self.command = command
        self.output = output
        self._handle = None
        self._new_folder = False

    def acquire(self) -> RunLock:
        import fcntl

        self._new_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+")  # noqa: SIM115 - held for the whole run
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise UserError(
                    f"another `bild-align {self.command}` is writing {self.output} right now; "
                    "wait for it to finish (or stop it), then run this command again to resume"
                ) from None
            if self.path.exists() and os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
            handle.close()  # its holder released and removed it meanwhile: lock the new file
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self.path.unlink(missing_ok=True)  # while still held: no other run holds it now
            self._handle.close()
            self._handle = None
            if self._new_folder:  # a failed start leaves no empty folder behind
                with contextlib.suppress(OSError):
                    self.path.parent.rmdir()

    def probe(self) -> None:
        """Fail now if another run holds the lock (and hold nothing)."""
        if self.path.exists():
            self.acquire().release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
