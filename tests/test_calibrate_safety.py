"""calibrate never loses or deletes what the user made, and recovers its own state."""

import json
import os
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bild_align.cli import main
from bild_align.runs.records import RunLock
from bild_align.testing.helpers import write_pairs


def _run(model_dir, pairs, output, *extra):
    argv = ["calibrate", "--large", str(model_dir), "--task", str(pairs)]
    argv += ["--source-column", "de", "--target-column", "en", "--max-new-tokens", "8"]
    return main(argv + ["--output", str(output), *map(str, extra)])


def _target_rows(output):
    (data,) = Path(output, "data").glob("*.parquet")
    return pq.read_table(data).to_pylist()


def test_overwrite_never_touches_the_users_files(byte_model_dir, tmp_path, capsys, monkeypatch):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    monkeypatch.chdir(tmp_path)
    for extra in ((), ("--overwrite",)):
        assert _run(byte_model_dir, pairs, ".", *extra) == 2
        assert "not a calibration run" in capsys.readouterr().err
    assert notes.read_text() == "mine" and pairs.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "pairs.jsonl"]

    # a calibration run the user added a file to: --overwrite removes only the run's files
    output = tmp_path / "calibration"
    assert _run(byte_model_dir, pairs, output) == 0
    (output / "my-notes.md").write_text("keep me")
    (output / "data" / "extra.csv").write_text("a,b\n")
    assert _run(byte_model_dir, pairs, output, "--overwrite", "--batch-size", "2") == 0
    assert (output / "my-notes.md").read_text() == "keep me"
    assert (output / "data" / "extra.csv").exists()
    assert len(_target_rows(output)) == 4


def test_output_that_is_a_file_is_refused(byte_model_dir, tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 2)
    target = tmp_path / "out.parquet"
    target.write_text("not a folder")
    assert _run(byte_model_dir, pairs, target) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "Traceback" not in err
    assert target.read_text() == "not a folder"


def test_a_second_run_on_the_same_output_is_refused(byte_model_dir, tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 3)
    output = tmp_path / "out"
    lock = RunLock(output / ".lock", "calibrate", str(output)).acquire()  # another run, alive
    try:
        assert _run(byte_model_dir, pairs, output) == 2
        assert "another `bild-align calibrate` is writing" in capsys.readouterr().err
    finally:
        lock.release()
    assert _run(byte_model_dir, pairs, output) == 0  # once it is gone, the run goes ahead


def test_duplicated_shards_are_recovered_without_losing_rows(byte_model_dir, tmp_path):
    """Two runs that once wrote one output each decoded every row: the next run finishes."""
    pairs = write_pairs(tmp_path / "pairs.jsonl", 5)
    output = tmp_path / "out"
    assert _run(byte_model_dir, pairs, output) == 0
    rows = _target_rows(output)
    shards = output / ".shards"
    shards.mkdir()
    finished = pq.read_table(next((output / "data").glob("*.parquet")))
    for copy in range(2):
        pq.write_table(finished, shards / f"shard-r{copy}-1.parquet")
    run = json.loads((output / "run.json").read_text())
    (output / "run.json").write_text(json.dumps({**run, "complete": False}))
    assert _run(byte_model_dir, pairs, output) == 0
    assert _target_rows(output) == rows


@pytest.mark.parametrize("change", ["content", "batch_size"])
def test_resume_refuses_changed_inputs(byte_model_dir, tmp_path, capsys, change):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4, seed=0)
    output = tmp_path / "out"
    assert _run(byte_model_dir, pairs, output) == 0
    extra = ()
    if change == "content":
        write_pairs(pairs, 4, seed=1)  # same file name, other sentences
    else:
        extra = ("--batch-size", "3")
    assert _run(byte_model_dir, pairs, output, *extra) == 2
    expected = "rows_digest" if change == "content" else "batch_size"
    assert expected in capsys.readouterr().err


def test_written_files_have_ordinary_permissions(byte_model_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 2)
    output = tmp_path / "out"
    previous = os.umask(0o022)
    try:
        assert _run(byte_model_dir, pairs, output) == 0
    finally:
        os.umask(previous)
    for name in ("README.md", "run.json", "data/train-00000-of-00001.parquet"):
        assert stat.S_IMODE((output / name).stat().st_mode) == 0o644, name


def test_bad_local_data_gets_one_line(byte_model_dir, tmp_path, capsys):
    nulls = tmp_path / "nulls.jsonl"
    nulls.write_text('{"de": "gut", "en": "good"}\n{"de": null, "en": "b"}\n')
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("de,en\nok,ok\nGr\xfc\xdfe,greetings\n".encode("latin-1"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"de": "a", "en": "b"}\n{"de": "c", \n')
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text('{"de": 12, "en": "twelve"}\n{"de": 7, "en": null}\n')
    cases = [
        (nulls, "row 1 of split 'train' has no source text (null)"),
        (latin1, "is not UTF-8 text (line 3"),
        (broken, "line 2 is not valid JSON"),
    ]
    for path, message in cases:
        assert _run(byte_model_dir, path, tmp_path / f"out-{path.stem}") == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("bild-align: error:") == 1, (
            err
        )
    # numbers are not text: refused (before, they were decoded as the text "12")
    assert _run(byte_model_dir, numbers, tmp_path / "out-numbers") == 2
    assert "column 'de' holds int64 values, not text" in capsys.readouterr().err
    assert not (tmp_path / "out-numbers").exists()
