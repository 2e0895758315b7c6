"""The `bild-align` command: help, user mistakes (exit 2), and a tiny benchmark run."""

import json
import re
import subprocess
import sys

import pytest

from bild_align.cli import main

COMMANDS = ("calibrate", "train", "eval", "chat", "demo", "bench")


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_explained(command, capsys):
    """Each option of each subcommand has help text, and --help shows it."""
    from bild_align.cli import build_parser

    (subparsers,) = [a for a in build_parser()._actions if a.dest == "==SUPPRESS==" and a.choices]
    parser = subparsers.choices[command]
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 5, (command, action.option_strings)
            assert action.option_strings[-1] in out, (command, action.option_strings)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--examples", "0"], "positive integer"),
        (["bench", "--eps", "a,b"], "comma-separated finite numbers"),
        (["bench", "--eps", "-1"], "--eps needs"),
        (["bench", "--preset", "huge"], "invalid choice"),
        (["bench", "--batch-sizes", "4,x"], "comma-separated positive integers"),
        (["bench", "--batch-sizes", "4"], "must include 1"),
        (["eval", "--batch-size", "0"], "positive integer"),
        (["eval", "--shared-checks"], "give --batch-size N > 1"),
    ],
)
def test_user_mistakes_exit_2_with_one_message(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_bench_tiny_writes_results(tmp_path):
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bild_align.cli",
            "bench",
            "--preset",
            "tiny",
            "--examples",
            "2",
            "--max-new-tokens",
            "8",
            "--eps",
            "0,0.05",
            "--batch-sizes",
            "1,2",
            "--sampling",
            "--device",
            "cpu",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(output.read_text())
    assert [level["eps"] for level in results["levels"]] == [0.0, 0.05]
    for level in results["levels"]:
        methods = {row["method"]: row for row in level["methods"]}
        assert set(methods) == {
            "large",
            "small",
            "assisted",
            "bild exact",
            "speculative",
            "bild",
            "large sample",
            "spec. sample",
            "bild sample",
        }
        assert methods["large"]["identical_to_large"] == 2
        assert methods["bild exact"]["identical_to_large"] == 2  # the lossless oracles
        assert methods["speculative"]["identical_to_large"] == 2
        assert methods["bild exact"]["stats"]["generated"] == 16
        assert 0.0 <= methods["bild"]["overhead_share"] < 1.0
        (batch,) = level["batches"]  # 2 inputs: one batch of 2, every method on it
        assert batch["batch_size"] == 2 and batch["batches"] == 1
        rows = {row["method"]: row for row in batch["methods"]}
        assert set(rows) == {
            "large",
            "bild exact",
            "speculative",
            "bild",
            "bild exact shared",
            "bild shared",
            "large sample",
            "spec. sample",
            "bild sample",
        }
        assert rows["bild exact"]["identical_to_large"] == 2
        made = {name: row["tokens_per_s"] * row["latency"]["total_s"] for name, row in rows.items()}
        assert made["bild exact"] == pytest.approx(made["large"])  # the same outputs, counted
        assert rows["bild exact shared"]["identical_to_large"] == 2
        assert rows["bild shared"]["setting"]["shared_checks"] is True
        assert made["spec. sample"] == pytest.approx(rows["spec. sample"]["stats"]["generated"])
    assert results["levels"][0]["agreement"] == 1.0
    assert "speedup" in result.stdout
    assert re.search(r"\b(\d+)/\1 \[", result.stderr)  # the progress bar reached its total


@pytest.mark.slow
def test_bench_progress_reaches_its_total_without_sampling_rows(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bild_align.cli", "bench", "--preset", "tiny", "--examples", "2",
         "--max-new-tokens", "4", "--eps", "0", "--batch-sizes", "1,2", "--device", "cpu",
         "--output", str(tmp_path / "bench.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"\b(\d+)/\1 \[", result.stderr), result.stderr[-500:]


def test_threads_option_sets_torch_threads_and_refuses_nonsense(monkeypatch, capsys):
    """Measured on a busy 2-core machine: tiny-model runs 10-20x slower with torch's default
    threads; every command takes --threads, and the results record the count used."""
    import torch

    import bild_align.pipeline.publish.command as publish

    seen = {}
    monkeypatch.setattr(
        publish, "run_export_generate", lambda config: seen.setdefault("n", torch.get_num_threads())
    )
    before = torch.get_num_threads()
    try:
        assert main(["export-generate", "x", "--threads", "1"]) == 0
        assert seen["n"] == 1
    finally:
        torch.set_num_threads(before)
    for bad in ("0", "-2", "two"):
        assert main(["eval", "--threads", bad]) == 2
        assert "give a whole number of threads" in capsys.readouterr().err
