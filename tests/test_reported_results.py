"""Results that mean what they say: metrics over the rows that have references, columns of
the right kind, honest labels."""

import json
from pathlib import Path

import pytest

from bild_align.cli import main
from bild_align.measure.pareto import fastest_within
from bild_align.pipeline.eval.command import run_eval
from bild_align.pipeline.eval.report import format_results
from bild_align.testing.helpers import one_error_line as _one_error_line
from bild_align.testing.helpers import pairs_eval_config as _config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_rows_without_a_reference_are_left_out_of_the_metric(byte_pair_dirs, tmp_path, capsys):
    from bild_align.measure.metrics import bleu

    rows = [{"de": "das Haus", "en": "the house"}, {"de": "die Katze", "en": "the cat"}]
    rows += [{"de": "ist gross"}, {"de": "und alt", "en": ""}]
    data = tmp_path / "refs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    results = run_eval(_config(*byte_pair_dirs, data, tmp_path / "r.json"))
    large = results["methods"][0]
    assert results["config"]["rows_without_reference"] == 2
    assert large["quality"] == bleu(large["outputs"][:2], ["the house", "the cat"])
    assert "2 of 4 rows have no reference" in capsys.readouterr().err
    assert "2 of 4 rows have no reference and are left out of bleu" in format_results(results)


@pytest.mark.parametrize(
    "row, column",
    [({"num": 3, "en": "x"}, "num"), ({"de": ["Hallo", "Welt"], "en": "x"}, "de")],
)
def test_a_source_column_that_is_not_text_is_refused_before_any_model_loads(
    tmp_path, capsys, row, column
):
    data = tmp_path / "odd.jsonl"
    data.write_text(json.dumps(row) + "\n")
    argv = ["eval", "--small", str(tmp_path / "no-small"), "--large", str(tmp_path / "no-large")]
    assert main([*argv, "--task", str(data), "--source-column", column]) == 2
    _one_error_line(capsys, f"column {column!r} holds")


def test_integers_in_a_column_named_source_are_refused(tmp_path, capsys):
    data = tmp_path / "ints.jsonl"
    data.write_text('{"source": 1, "target": "one"}\n')
    argv = ["eval", "--small", str(tmp_path / "s"), "--large", str(tmp_path / "l")]
    assert main([*argv, "--task", str(data)]) == 2
    _one_error_line(capsys, "column 'source' holds int64 values, not text")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", b"", "no rows in"),
        ("blank.jsonl", b"\n\n", "no rows in"),
        ("header.csv", b"de,en\n", "no rows in"),
        ("latin.jsonl", b'{"de": "Gr\xfc\xdfe", "en": "hi"}\n', "is not UTF-8 text (line 1"),
    ],
)
def test_empty_and_undecodable_data_files_get_one_line(tmp_path, capsys, name, content, message):
    data = tmp_path / name
    data.write_bytes(content)
    argv = ["eval", "--small", str(tmp_path / "s"), "--large", str(tmp_path / "l")]
    assert main([*argv, "--task", str(data), "--source-column", "de"]) == 2
    _one_error_line(capsys, message)


def test_reference_compat_at_rb_0_is_not_called_exact(byte_pair_dirs, pairs, tmp_path):
    results = run_eval(_config(*byte_pair_dirs, pairs, tmp_path / "r.json", reference_compat=True))
    assert "with --reference-compat, rb=0 is not exact" in format_results(results)
    readme = README.read_text()
    assert "rb=0 is exact" not in readme or "--reference-compat" in readme.split("rb=0", 1)[1][:400]


def test_a_sweep_slower_than_the_large_model_has_no_fastest_setting():
    assert fastest_within([(40.0, 0.8)], best_quality=40.0, max_drop=1.0) is None
    assert fastest_within([(40.0, 0.8), (39.5, 1.3)], best_quality=40.0, max_drop=1.0) == 1


def test_eval_records_both_local_models_as_absolute_paths(
    byte_pair_dirs, pairs, tmp_path, monkeypatch
):

    small, large = byte_pair_dirs
    monkeypatch.chdir(small.parent)
    results = run_eval(_config(Path(small.name), large, pairs, tmp_path / "r.json"))
    assert results["config"]["small"] == str(small.resolve())
    assert results["config"]["large"] == str(large.resolve())


def test_bench_refuses_batches_larger_than_its_examples(capsys, tmp_path):
    output = str(tmp_path / "b.json")
    argv = ["bench", "--preset", "tiny", "--examples", "1", "--batch-sizes", "1,2"]
    assert main([*argv, "--output", output]) == 2
    _one_error_line(capsys, "a batch needs that many inputs")
