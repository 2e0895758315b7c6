"""The `bild-align` command: help, user mistakes (exit 2), and a tiny benchmark run."""

import json
import subprocess
import sys

import pytest

from bild_align.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "bench" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--examples", "0"], "positive integer"),
        (["bench", "--eps", "a,b"], "comma-separated finite numbers"),
        (["bench", "--eps", "-1"], "--eps needs"),
        (["bench", "--preset", "huge"], "invalid choice"),
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
        assert set(methods) == {"large", "small", "assisted", "bild exact", "speculative", "bild"}
        assert methods["large"]["identical_to_large"] == "2/2"
        assert methods["bild exact"]["identical_to_large"] == "2/2"  # the lossless oracles
        assert methods["speculative"]["identical_to_large"] == "2/2"
        assert methods["bild exact"]["stats"]["generated"] == 16
        assert 0.0 <= methods["bild"]["overhead_share"] < 1.0
    assert results["levels"][0]["agreement"] == 1.0
    assert "speedup" in result.stdout
