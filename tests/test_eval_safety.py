"""eval keeps every finished example: checks the output first, writes as it goes, resumes."""

import json
import os
from pathlib import Path

import pytest

from bild_align.cli import main
from bild_align.measure import harness
from bild_align.pipeline.eval.command import EvalConfig, run_eval
from bild_align.runs.records import partial_path
from bild_align.testing.helpers import byte_level_model, save_with_byte_tokenizer, write_pairs


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("eval_safety") / "pairs.jsonl", 5, seed=7)


def _config(byte_pair_dirs, pairs_file, output, **extra):
    small, large = byte_pair_dirs
    return EvalConfig(
        small=str(small), large=str(large), task=str(pairs_file), source_column="de",
        target_column="en", max_new_tokens=8, output=str(output), baselines=("large",), **extra,
    )  # fmt: skip


def test_sweep_into_a_new_folder_writes_everything(
    byte_pair_dirs, pairs_file, tmp_path, monkeypatch
):
    small, large = map(str, byte_pair_dirs)
    monkeypatch.chdir(tmp_path)  # a fresh folder: the default results/eval.json does not exist yet
    argv = ["eval", "--small", small, "--large", large, "--task", str(pairs_file)]
    argv += ["--source-column", "de", "--max-new-tokens", "6", "--baselines", "large"]
    assert main([*argv, "--sweep", "--rb", "0,3", "--fb", "0.5"]) == 0
    for name in ("eval.json", "eval.csv", "eval.png"):
        assert (tmp_path / "results" / name).stat().st_size > 0
    assert not partial_path(tmp_path / "results" / "eval.json").exists()


def test_bad_output_fails_before_any_work(byte_pair_dirs, pairs_file, tmp_path, capsys):
    small, large = map(str, byte_pair_dirs)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["eval", "--small", small, "--large", large, "--task", str(pairs_file)]
    for output, message in ((tmp_path, "is a directory"), (blocker / "r.json", "is a file")):
        assert main([*argv, "--source-column", "de", "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root may write anyway
            assert main([*argv, "--source-column", "de", "--output", str(locked / "r.json")]) == 2
            assert "cannot write" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_interrupted_eval_keeps_finished_examples_and_resumes(
    byte_pair_dirs, pairs_file, tmp_path, monkeypatch
):
    output = tmp_path / "r.json"
    config = _config(byte_pair_dirs, pairs_file, output, rollback_threshold=(0.0, 4.0), sweep=True)
    real_timed, calls = harness.timed, []

    def interrupt_on_the_seventh_run(call, device):
        calls.append(1)
        if len(calls) == 7:  # 2 examples x 3 runs timed, then Ctrl-C in the third
            raise KeyboardInterrupt
        return real_timed(call, device)

    monkeypatch.setattr(harness, "timed", interrupt_on_the_seventh_run)
    with pytest.raises(KeyboardInterrupt):
        run_eval(config)
    partial = partial_path(output)
    lines = partial.read_text().splitlines()
    assert len(lines) == 1 + 2 and not output.exists()  # fingerprint + the two finished examples
    kept = [json.loads(line)["runs"][0]["outputs"][0] for line in lines[1:]]
    with partial.open("a") as handle:
        handle.write('{"runs": [{"seco')  # a line torn by a crash is redone, not fatal

    monkeypatch.setattr(harness, "timed", real_timed)
    results = run_eval(
        _config(byte_pair_dirs, pairs_file, output, rollback_threshold=(0.0, 4.0), sweep=True)
    )
    assert results["config"]["resumed_after"] == 2
    for method in results["methods"]:
        assert len(method["outputs"]) == 5 and method["latency"]["count"] == 5
    assert results["methods"][0]["outputs"][:2] == kept
    assert not partial.exists() and json.loads(output.read_text())["methods"]
    # the exact mode still equals the large model on every example, resumed or not
    assert results["methods"][1]["outputs"] == results["methods"][0]["outputs"]


def test_interrupted_batched_eval_resumes_after_its_last_whole_batch(
    byte_pair_dirs, pairs_file, tmp_path, monkeypatch
):
    output = tmp_path / "r.json"
    real_timed, calls = harness.timed, []

    def interrupt_on_the_fourth_run(call, device):
        calls.append(1)
        if len(calls) == 4:  # the first batch's two runs, then Ctrl-C in the second batch
            raise KeyboardInterrupt
        return real_timed(call, device)

    monkeypatch.setattr(harness, "timed", interrupt_on_the_fourth_run)
    with pytest.raises(KeyboardInterrupt):
        run_eval(
            _config(byte_pair_dirs, pairs_file, output, rollback_threshold=(0.0,), batch_size=2)
        )
    lines = partial_path(output).read_text().splitlines()
    assert len(lines) == 1 + 1  # fingerprint + the first batch
    assert len(json.loads(lines[1])["runs"][0]["outputs"]) == 2

    monkeypatch.setattr(harness, "timed", real_timed)
    results = run_eval(
        _config(byte_pair_dirs, pairs_file, output, rollback_threshold=(0.0,), batch_size=2)
    )
    assert results["config"]["resumed_after"] == 2
    for method in results["methods"]:
        assert len(method["outputs"]) == 5 and method["latency"]["count"] == 3  # 2 + 2 + 1
    assert results["methods"][1]["outputs"] == results["methods"][0]["outputs"]
    fresh = run_eval(
        _config(byte_pair_dirs, pairs_file, tmp_path / "b.json", rollback_threshold=(0.0,))
    )
    assert fresh["methods"][0]["outputs"] == results["methods"][0]["outputs"]


def test_partial_results_of_other_settings_are_not_mixed_in(
    byte_pair_dirs, pairs_file, tmp_path, capsys
):
    output = tmp_path / "r.json"
    partial_path(output).write_text(json.dumps({"fingerprint": {"rb": [9.0]}}) + "\n")
    small, large = map(str, byte_pair_dirs)
    argv = ["eval", "--small", small, "--large", large, "--task", str(pairs_file)]
    assert main([*argv, "--source-column", "de", "--output", str(output)]) == 2
    assert "interrupted eval with other settings" in capsys.readouterr().err
    assert partial_path(output).exists()


def test_small_model_with_padded_embeddings_is_evaluated(byte_pair_dirs, pairs_file, tmp_path):
    padded = byte_level_model(num_layers=1, seed=3)
    padded.resize_token_embeddings(400)  # 384 byte ids, padded for speed
    small = save_with_byte_tokenizer(padded, tmp_path / "padded")
    config = _config(byte_pair_dirs, pairs_file, tmp_path / "r.json", rollback_threshold=(0.0,))
    config.small = str(small)
    results = run_eval(config)
    large_outputs, bild_outputs = (row["outputs"] for row in results["methods"])
    assert bild_outputs == large_outputs
    assert Path(tmp_path / "r.json").exists()


def test_bench_checks_its_output_before_building_models(tmp_path, capsys):
    assert main(["bench", "--preset", "tiny", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "Traceback" not in err


def test_an_interrupted_bench_keeps_its_finished_levels(tmp_path, capsys, monkeypatch):
    from bild_align.pipeline.bench import command as benchmark

    measured = []

    def measure_level(config, eps, device, dtype, progress):
        if measured:  # Ctrl-C during the second agreement level
            raise KeyboardInterrupt
        measured.append(eps)
        return {"eps": eps, "agreement": 1.0, "methods": [], "batches": []}

    monkeypatch.setattr(benchmark, "_measure_level", measure_level)
    output = tmp_path / "bench.json"
    args = ["bench", "--preset", "tiny", "--eps", "0,0.05", "--device", "cpu"]
    assert main([*args, "--output", str(output)]) == 130
    assert "1 of 2 agreement levels are kept" in capsys.readouterr().err
    saved = json.loads(output.read_text())
    assert [level["eps"] for level in saved["levels"]] == [0.0]
