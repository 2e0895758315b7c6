"""The run record every writing stage shares: the partial log, the recorded fingerprint, the
output lock."""

import json

import pytest

from bild_align.errors import UserError
from bild_align.runs.records import PartialLog, output_lock, partial_path, recorded_differences


def test_partial_log_resumes_its_own_run_and_refuses_others(tmp_path):
    output = tmp_path / "results.json"
    log = PartialLog(output, "an interrupted tune")
    assert log.open({"seed": 1}) == ([], 0) and log.path == partial_path(output)
    log.append({"key": "a"})
    log.append({"key": "b"})
    with log.path.open("a") as handle:
        handle.write('{"key": "c"')  # torn by a crash
    again = PartialLog(output, "an interrupted tune")
    assert again.open({"seed": 1}) == ([{"key": "a"}, {"key": "b"}], 1)
    again.rewrite([{"key": "a"}])
    assert PartialLog(output, "x").open({"seed": 1}) == ([{"key": "a"}], 0)
    with pytest.raises(UserError, match="holds an interrupted tune with other settings"):
        PartialLog(output, "an interrupted tune").open({"seed": 2})
    again.finish()
    assert not log.path.exists()


def test_partial_log_never_replaces_a_file_it_did_not_write(tmp_path):
    output = tmp_path / "results.json"
    partial_path(output).write_text('{"mine": true}\n')
    with pytest.raises(UserError, match="something other than bild-align's partial results"):
        PartialLog(output, "an interrupted tune").open({"seed": 1})
    assert partial_path(output).read_text() == '{"mine": true}\n'


def test_recorded_differences_name_the_keys_that_changed(tmp_path):
    run_file = tmp_path / "run.json"
    assert recorded_differences(run_file, {"a": 1}, "fix it") == []  # no record yet
    run_file.write_text(json.dumps({"fingerprint": {"a": 1, "b": [1, 2]}}))
    assert recorded_differences(run_file, {"a": 1, "b": (1, 2)}, "fix it") == []
    assert recorded_differences(run_file, {"a": 2, "b": [1, 2], "c": 0}, "fix") == ["a", "c"]
    run_file.write_text("[1, 2]")
    with pytest.raises(UserError, match=r"damaged \(not a run record\); fix it"):
        recorded_differences(run_file, {"a": 1}, "fix it")


def test_output_lock_refuses_a_second_run_on_one_output(tmp_path):
    refusal = pytest.raises(UserError, match="another `bild-align eval` is writing --output")
    with output_lock("eval", tmp_path / "r.json"), refusal:
        output_lock("eval", tmp_path / "r.json").acquire()
    output_lock("eval", tmp_path / "r.json").acquire().release()


def test_a_torn_line_is_dropped_so_the_next_finished_record_is_kept(tmp_path):
    output = tmp_path / "tune.json"
    log = PartialLog(output, "an interrupted tune")
    log.open({"seed": 1})
    log.append({"key": "a"})
    with log.path.open("a") as handle:
        handle.write('{"key": "b", "outp')  # Ctrl-C or a crash in the middle of a line
    resumed = PartialLog(output, "an interrupted tune")
    assert resumed.open({"seed": 1}) == ([{"key": "a"}], 1)
    resumed.append({"key": "b"})
    assert PartialLog(output, "x").open({"seed": 1}) == ([{"key": "a"}, {"key": "b"}], 0)


def test_a_released_lock_leaves_nothing_behind(tmp_path):
    """A new-user finding: every tune left `.tune.json.lock` beside its output, and a tune
    that failed to start left a `results/` folder holding only that file."""
    lock = output_lock("tune", tmp_path / "results" / "tune.json")
    with lock:
        assert lock.path.is_file()
    assert not (tmp_path / "results").exists()  # a failed start: no folder of its own left
    with lock:
        (tmp_path / "results" / "tune.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["tune.json"]


def test_a_run_recorded_with_the_settings_earlier_names_resumes(tmp_path):
    """Fingerprints written before the settings took BiLDPolicy's names (rb, fb, fallback)
    still match the same run, and still differ from another's."""
    output = tmp_path / "eval.json"
    earlier = {"rb": [2.0], "fb": [0.6], "fallback": "max_prob", "seed": 1}
    partial_path(output).write_text(json.dumps({"fingerprint": earlier}) + "\n" + '{"key": "a"}\n')
    today = {
        "rollback_threshold": [2.0],
        "fallback_threshold": [0.6],
        "fallback_rule": "max_prob",
        "seed": 1,
    }
    assert PartialLog(output, "an interrupted eval").open(today) == ([{"key": "a"}], 0)
    with pytest.raises(UserError, match=r"other settings \(fallback_rule\)"):
        PartialLog(output, "an interrupted eval").open({**today, "fallback_rule": "entropy"})
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps({"fingerprint": earlier}))
    assert recorded_differences(run_file, today, "fix it") == []
    assert recorded_differences(run_file, {**today, "rollback_threshold": [3.0]}, "x") == [
        "rollback_threshold"
    ]
