"""Outputs never overwrite the input, each other or the user's files; a resume never mixes two
runs; damaged state and unwritable folders get one line and the fix."""

import io
import json

import pyarrow.parquet as pq
import pytest

from bild_align.cli import main
from bild_align.errors import UserError
from bild_align.measure import harness
from bild_align.pipeline.eval.command import run_eval
from bild_align.runs.records import output_lock, partial_path
from bild_align.testing.helpers import (
    byte_level_model,
    interrupted_on_call,
    save_with_byte_tokenizer,
)
from bild_align.testing.helpers import calibrate_pairs as _calibrate
from bild_align.testing.helpers import eval_argv as _eval_argv
from bild_align.testing.helpers import one_error_line as _one_error_line
from bild_align.testing.helpers import pairs_eval_config as _config


def test_eval_never_writes_over_its_input_or_the_users_files(
    byte_pair_dirs, tmp_path, pairs, capsys
):
    import csv

    table = tmp_path / "test.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["de", "en"])
        writer.writerows([["das Haus", "the house"], ["die Katze", "the cat"]])
    before = table.read_bytes()
    sweep = ["--sweep", "--rb", "0,2", "--fb", "0.5"]
    assert main(_eval_argv(byte_pair_dirs, table, *sweep, "--output", str(tmp_path / "test.json")))
    _one_error_line(capsys, "the task's input data")
    assert table.read_bytes() == before and not (tmp_path / "test.json").exists()

    before = pairs.read_bytes()
    assert main(_eval_argv(byte_pair_dirs, pairs, "--output", str(pairs))) == 2
    _one_error_line(capsys, "the task's input data")
    assert pairs.read_bytes() == before

    assert main(_eval_argv(byte_pair_dirs, pairs, *sweep, "--output", str(tmp_path / "s.csv")))
    _one_error_line(capsys, "would both be written to")

    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    assert main(_eval_argv(byte_pair_dirs, pairs, "--output", str(notes))) == 2
    _one_error_line(capsys, "holds something other than bild-align's results JSON")
    assert notes.read_text() == '{"mine": 1}'
    picture = tmp_path / "r.png"
    picture.write_bytes(b"\x89PNG my holiday")
    assert main(_eval_argv(byte_pair_dirs, pairs, *sweep, "--output", str(tmp_path / "r.json")))
    _one_error_line(capsys, "sweep plot")
    assert picture.read_bytes() == b"\x89PNG my holiday"

    # this tool's own results (JSON, CSV, plot) are replaced by a rerun
    output = tmp_path / "ok.json"
    assert main(_eval_argv(byte_pair_dirs, pairs, *sweep, "--output", str(output))) == 0
    assert main(_eval_argv(byte_pair_dirs, pairs, *sweep, "--output", str(output))) == 0


def test_names_longer_than_the_file_system_allows_get_one_line(byte_pair_dirs, pairs, capsys):
    long = str(pairs.parent / ("a" * 260))
    assert main(_eval_argv(byte_pair_dirs, pairs, "--output", long + ".json")) == 2
    _one_error_line(capsys, "this file system allows at most")
    assert main(["calibrate", "--large", str(byte_pair_dirs[1]), "--task", str(pairs)]
                + ["--source-column", "de", "--output", long]) == 2  # fmt: skip
    _one_error_line(capsys, "this file system allows at most")


def _interrupt_after(monkeypatch, runs):
    real, calls = harness.timed, []

    def timed(call, device):
        calls.append(1)
        if len(calls) > runs:
            raise KeyboardInterrupt
        return real(call, device)

    monkeypatch.setattr(harness, "timed", timed)
    return real


def test_an_interrupted_eval_does_not_resume_with_other_weights_in_the_folder(
    byte_pair_dirs, tmp_path, pairs, monkeypatch
):
    small_dir = save_with_byte_tokenizer(byte_level_model(num_layers=1, seed=3), tmp_path / "s")
    output = tmp_path / "r.json"
    real = _interrupt_after(monkeypatch, 4)  # two examples x (large, bild)
    with pytest.raises(KeyboardInterrupt):
        run_eval(_config(small_dir, byte_pair_dirs[1], pairs, output))
    monkeypatch.setattr(harness, "timed", real)
    byte_level_model(num_layers=1, seed=11).save_pretrained(small_dir)  # e.g. train --resume
    with pytest.raises(UserError, match="interrupted eval with other settings"):
        run_eval(_config(small_dir, byte_pair_dirs[1], pairs, output))


def test_a_second_eval_on_the_same_output_is_refused(byte_pair_dirs, pairs, tmp_path, capsys):
    output = tmp_path / "r.json"
    lock = output_lock("eval", output)
    with lock:
        assert main(_eval_argv(byte_pair_dirs, pairs, "--output", str(output))) == 2
        _one_error_line(capsys, "another `bild-align eval` is writing --output")
    assert main(_eval_argv(byte_pair_dirs, pairs, "--output", str(output))) == 0
    assert not lock.path.exists()


def test_partial_lines_are_matched_by_example_id_and_damaged_ones_skipped(
    byte_pair_dirs, tmp_path, pairs, monkeypatch, capsys
):
    small, large = byte_pair_dirs
    output = tmp_path / "r.json"
    real = _interrupt_after(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        run_eval(_config(small, large, pairs, output))
    fingerprint, first, second = partial_path(output).read_text().splitlines()
    assert json.loads(first)["ids"] == ["validation-0"]
    damaged = [
        fingerprint, first, "garbage \x00 {", '{"ids": ["validation-1"], "runs": []}', second,
        first,  # a second process appended example 0 again
    ]  # fmt: skip
    partial_path(output).write_text("\n".join(damaged) + "\n")
    monkeypatch.setattr(harness, "timed", real)
    resumed = run_eval(_config(small, large, pairs, output))
    assert resumed["config"]["resumed_after"] == 2  # the valid line after the garbage is kept
    assert "2 damaged line(s)" in capsys.readouterr().err
    fresh = run_eval(_config(small, large, pairs, tmp_path / "fresh.json"))
    assert resumed["methods"][0]["outputs"] == fresh["methods"][0]["outputs"]


def test_calibrate_rebuilds_a_deleted_dataset_instead_of_trusting_run_json(
    byte_model_dir, pairs, tmp_path, capsys
):
    output = tmp_path / "cal"
    assert _calibrate(byte_model_dir, pairs, output) == 0
    (data,) = (output / "data").glob("*.parquet")
    rows = pq.read_table(data).to_pylist()
    data.unlink()
    assert _calibrate(byte_model_dir, pairs, output) == 0
    assert "missing or damaged" in capsys.readouterr().err
    assert pq.read_table(data).to_pylist() == rows
    data.write_bytes(data.read_bytes()[:100])  # truncated
    assert _calibrate(byte_model_dir, pairs, output) == 0
    assert pq.read_table(data).to_pylist() == rows


def test_calibrate_names_a_damaged_shard_or_run_record(
    byte_model_dir, pairs, tmp_path, capsys, monkeypatch
):
    import bild_align.pipeline.calibrate.command as calibrate

    output = tmp_path / "cal"
    real = calibrate.greedy_texts
    monkeypatch.setattr(calibrate, "greedy_texts", interrupted_on_call(real, 3))
    batches = ("--batch-size", "1", "--shard-rows", "1")
    assert _calibrate(byte_model_dir, pairs, output, *batches) == 130
    assert "interrupted: 2 of 4 rows are kept" in capsys.readouterr().err
    monkeypatch.setattr(calibrate, "greedy_texts", real)
    shard = sorted((output / ".shards").glob("shard-*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:50])
    assert _calibrate(byte_model_dir, pairs, output, *batches) == 2
    err = _one_error_line(capsys, "is damaged")
    assert str(shard) in err and "delete it" in err
    shard.unlink()
    assert _calibrate(byte_model_dir, pairs, output, *batches) == 0
    assert "resuming: 1 of 4 rows kept" in capsys.readouterr().out
    (output / "run.json").write_text('{"fingerprint": {"spl')
    assert _calibrate(byte_model_dir, pairs, output, *batches) == 2
    _one_error_line(capsys, "run.json is damaged")
    assert _calibrate(byte_model_dir, pairs, output, "--overwrite") == 0
    assert (output / "data" / "train-00000-of-00001.parquet").is_file()


def test_unwritable_output_folders_are_refused_before_any_model_loads(
    byte_model_dir, pairs, tmp_path, capsys, monkeypatch
):

    import os

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a non-root user would see
    assert _calibrate(tmp_path / "no-model", pairs, tmp_path / "cal") == 2
    _one_error_line(capsys, "permission denied")
    argv = ["train", "--recipe", "recipes/tiny.yaml", "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    _one_error_line(capsys, "permission denied")


def test_a_permission_error_anywhere_is_one_line(monkeypatch, capsys):
    import bild_align.pipeline.calibrate.command as calibrate

    def refuse(config):
        raise PermissionError(13, "Permission denied", "/somewhere/out")

    monkeypatch.setattr(calibrate, "run_calibration", refuse)
    assert main(["calibrate", "--task", "gettext-de-en", "--output", "x"]) == 2
    _one_error_line(capsys, "Permission denied: /somewhere/out")


def test_chat_keeps_the_session_when_an_input_exceeds_a_position_table():
    from transformers import ByT5Tokenizer

    from bild_align.models.toy import deepen_bart, random_bart
    from bild_align.pipeline.chat.console import Console

    small = random_bart("marian", vocab_size=384, d_model=32, seed=7)  # 128 positions
    large = deepen_bart(small, extra_layers=1, eps=0.05, seed=8)
    out = io.StringIO()
    console = Console(small, large, ByT5Tokenizer(), out)
    console.run(["/max 200", "x" * 300, "kurz"])
    text = out.getvalue()
    assert "the input is cut to 128 of its 301 tokens" in text
    assert "at most 127 new tokens" in text and "error" not in text
    assert text.count("bild ") >= 2  # both inputs decoded
