"""Crash-safe, resumable row storage: Parquet shards written atomically, merged at the end.

    store = ShardStore(Path("out/.shards"))
    done = store.done_ids()                      # ids written by any earlier (crashed) run
    store.write(rows, tag="rank0")               # each shard appears whole or not at all
    rows = store.read_all()                      # every row once, in no particular order

Several processes may write into one store at once (each with its own tag); a row is never
split across shards, so a crash loses at most the rows that were not yet written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bild_align.errors import UserError, first_line


def _read(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A shard's rows; a damaged shard is a UserError naming it and the fix."""
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise UserError(
            f"the shard {path} is damaged ({type(error).__name__}: {first_line(error)}); "
            "delete it and run the same command again (its rows are decoded again)"
        ) from None


class ShardStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._counter = 0

    def shard_paths(self) -> list[Path]:
        return sorted(self.directory.glob("shard-*.parquet"))

    def done_ids(self) -> set[str]:
        done: set[str] = set()
        for path in self.shard_paths():
            done.update(_read(path, columns=["id"]).column("id").to_pylist())
        return done

    def write(self, rows: list[dict], tag: str) -> Path | None:
        if not rows:
            return None
        self._counter += 1
        name = f"shard-{tag}-{time.time_ns()}-{self._counter:06d}.parquet"
        final = self.directory / name
        temporary = self.directory / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(rows), temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        return final

    def read_all(self) -> list[dict]:
        rows: list[dict] = []
        for path in self.shard_paths():
            rows.extend(_read(path).to_pylist())
        return rows

    def clear(self) -> None:
        for path in self.directory.glob("*shard-*"):
            path.unlink()
        self.directory.rmdir()
