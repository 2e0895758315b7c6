"""Small file helpers shared by the stages.

check_output_file("results/eval.json")        # before hours of work: fail now, not at the end
write_json_atomic("results.json", results)   # readers never see a half-written file
write_text_atomic("README.md", card)
append_jsonl("results/eval.partial.jsonl", record)   # one finished example, flushed to disk

Every file is written to a temporary file beside its target and renamed into place, with the
permissions an ordinary `open` would give it (0644 under umask 022).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bild_align.errors import UserError


def check_name_lengths(path: str | os.PathLike, what: str = "--output") -> Path:
    """Refuse a path with a name longer than the file system allows (UserError, not OSError
    errno 36 from deep inside a run)."""
    path = Path(path).expanduser()
    try:
        limit = os.pathconf(_nearest_existing(path), "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise UserError(
                f"{what}: the name {part[:24]}... is {len(os.fsencode(part))} bytes long; this "
                f"file system allows at most {limit}"
            )
    return path


def _nearest_existing(path: Path) -> Path:
    """`path`, or the nearest folder above it that exists."""

    def exists(candidate: Path) -> bool:
        try:
            return candidate.exists()
        except OSError:  # a name too long, a loop of links
            return False

    return next((p for p in (path, *path.parents) if exists(p)), Path("."))


def check_writable_folder(path: str | os.PathLike, what: str = "--output") -> Path:
    """Refuse a folder that cannot be created or written, before any work (nothing is created
    here: the nearest existing folder above it must be writable)."""
    path = check_name_lengths(path, what)
    existing = _nearest_existing(path)
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: cannot write in {existing} (permission denied)")
    if not existing.is_dir():
        raise UserError(f"{what} {path}: {existing} is a file, not a folder")
    return path


def check_output_file(path: str | os.PathLike, what: str = "--output") -> Path:
    """Make sure `path` can be written, so that a long run cannot fail at its very end; raises
    UserError saying why not. Nothing is created: a run that fails to start leaves no trace."""
    path = check_name_lengths(path, what)
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory; give a file name, e.g. {path}/results.json")
    check_writable_folder(path.parent, what)
    if path.parent.is_dir():
        try:
            descriptor, probe = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.", suffix=".probe"
            )
        except OSError as error:
            raise UserError(
                f"{what} {path}: cannot write in {path.parent} ({error.strerror})"
            ) from None
        os.close(descriptor)
        os.unlink(probe)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    # os.open with 0o666 lets the kernel apply the process's umask, as open() would
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def differing_keys(previous: dict, current: dict) -> list[str]:
    """The keys whose values differ between two run records (present in either), sorted."""
    return sorted(
        key for key in previous.keys() | current.keys() if previous.get(key) != current.get(key)
    )


def append_jsonl(path: str | os.PathLike, record: Any) -> None:
    """Append one JSON line and flush it to disk: a crash loses at most the line being written,
    and `read_jsonl` skips such a torn last line."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike) -> tuple[list[Any], list[int]]:
    """(every readable JSON line of `path`, the numbers of the lines that are not): [] and []
    if it does not exist. A line torn by a crash or damaged later is skipped, not the lines
    after it."""
    path = Path(path)
    if not path.exists():
        return [], []
    records, unreadable = [], []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                unreadable.append(number)
    return records, unreadable


def holds_json_keys(path: str | os.PathLike, keys: set[str]) -> bool:
    """Whether the file at `path` is a JSON object with (at least) these keys: a results file
    this tool wrote, which a rerun may replace."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        return False
    return isinstance(data, dict) and keys <= data.keys()


def read_json_file(path: str | os.PathLike, fix: str) -> Any:
    """A JSON file's content; a damaged file is a UserError naming it and `fix`."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8"
        raise UserError(f"{path} is damaged (not valid JSON: {reason}); {fix}") from None
