"""bild-align calibrate: batched = unbatched, dataset format, resume after kills, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import yaml
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from bild_align.cli import main
from bild_align.models.batched_generate import greedy_texts
from bild_align.pipeline.calibrate import command as calibrate
from bild_align.pipeline.calibrate.command import CalibrateConfig, run_calibration
from bild_align.testing.helpers import TWO_CPU_ENV, TWO_CPU_PROCESSES, write_pairs


def _calibrate(model_dir, pairs, output, **extra):
    config = CalibrateConfig(
        large=str(model_dir),
        task=str(pairs),
        output=str(output),
        source_column="de",
        target_column="en",
        **{"max_new_tokens": 24, **extra},
    )
    return run_calibration(config)


def _rows(output):
    files = sorted(Path(output, "data").glob("*.parquet"))
    return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")


def test_batched_sorted_output_equals_unbatched(byte_model_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 23)
    output = _calibrate(byte_model_dir, pairs, tmp_path / "out", batch_size=5, split="train")
    model = AutoModelForSeq2SeqLM.from_pretrained(byte_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(byte_model_dir)
    rows = _rows(output)
    assert len(rows) == 23
    assert rows["index"] == list(range(23))
    lengths = set()
    for row in rows:
        (alone,) = greedy_texts(model, tokenizer, [row["source"]], 256, 24)
        assert row["target"] == alone
        lengths.add(len(alone))
    assert len(lengths) > 3  # outputs are real, varied text, not all empty


def test_dataset_card_and_loading(byte_model_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 9)
    output = _calibrate(byte_model_dir, pairs, tmp_path / "out", split="validation")
    loaded = datasets.load_dataset(str(output), split="validation")
    assert set(loaded.column_names) == {"index", "id", "source", "target", "reference"}
    assert loaded["id"] == [f"validation-{i}" for i in range(9)]
    source_rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert loaded["source"] == [row["de"] for row in source_rows]
    assert loaded["reference"] == [row["en"] for row in source_rows]
    card = Path(output, "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])["bild_align"]
    assert meta["large_model"] == str(byte_model_dir)
    assert meta["large_model_revision"].startswith("local:")
    assert meta["split"] == "validation" and meta["rows"] == 9
    assert meta["generation"]["max_new_tokens"] == 24
    assert meta["bild_align_version"]
    assert not Path(output, ".shards").exists()


def _cli(*args, env=None):
    return [sys.executable, "-m", "bild_align.cli", "calibrate", *map(str, args)]


@pytest.mark.slow
def test_resume_after_repeated_kills(byte_model_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 60)
    output = tmp_path / "out"
    command = _cli(
        "--large",
        byte_model_dir,
        "--task",
        pairs,
        "--source-column",
        "de",
        "--target-column",
        "en",
        "--output",
        output,
        "--batch-size",
        "2",
        "--shard-rows",
        "2",
        "--max-new-tokens",
        "48",
        "--device",
        "cpu",
    )
    killed = 0
    for _ in range(5):  # five kill-and-resume cycles
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        shards = output / ".shards"
        start_count = len(list(shards.glob("shard-*"))) if shards.exists() else 0
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline:
            if shards.exists() and len(list(shards.glob("shard-*"))) > start_count + 1:
                process.send_signal(signal.SIGKILL)
                killed += 1
                break
            time.sleep(0.05)
        process.wait()
    assert killed >= 4
    final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert "resuming" in final.stdout
    rows = _rows(output)
    assert sorted(rows["index"]) == list(range(60))
    assert len(set(rows["id"])) == 60
    clean = _calibrate(byte_model_dir, pairs, tmp_path / "clean", max_new_tokens=48)
    assert rows["target"] == _rows(clean)["target"]


@pytest.mark.slow
def test_two_process_run_has_every_row_once(byte_model_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 15)
    output = tmp_path / "dist"
    env = {**os.environ, **TWO_CPU_ENV}
    result = subprocess.run(
        [
            *TWO_CPU_PROCESSES,
            "calibrate",
            "--large",
            str(byte_model_dir),
            "--task",
            str(pairs),
            "--source-column",
            "de",
            "--target-column",
            "en",
            "--output",
            str(output),
            "--batch-size",
            "3",
            "--shard-rows",
            "3",
            "--max-new-tokens",
            "24",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(output)
    assert rows["index"] == list(range(15))
    clean = _calibrate(byte_model_dir, pairs, tmp_path / "clean")
    assert rows["target"] == _rows(clean)["target"]


def _exit_code(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


def test_user_mistakes_exit_2(byte_model_dir, tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    base = [
        "calibrate",
        "--large",
        str(byte_model_dir),
        "--source-column",
        "de",
        "--target-column",
        "en",
        "--max-new-tokens",
        "8",
    ]
    cases = [
        (base + ["--task", "no-such-task", "--output", str(tmp_path / "a")], "unknown task"),
        (
            base + ["--task", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "b")],
            "does not exist",
        ),
        (
            [
                "calibrate",
                "--large",
                str(byte_model_dir),
                "--task",
                str(pairs),
                "--source-column",
                "deu",
                "--output",
                str(tmp_path / "c"),
            ],
            "no source column 'deu'",
        ),
        (
            [
                "calibrate",
                "--large",
                str(tmp_path / "nope"),
                "--task",
                str(pairs),
                "--source-column",
                "de",
                "--output",
                str(tmp_path / "d"),
            ],
            "does not exist",
        ),
        (base + ["--task", str(empty), "--output", str(tmp_path / "e")], str(empty)),
        (
            base + ["--task", str(pairs), "--output", str(tmp_path / "f"), "--max-samples", "0"],
            "positive integer",
        ),
    ]
    for argv, message in cases:
        code, err = _exit_code(argv, capsys)
        assert code == 2, argv
        assert message in err and "Traceback" not in err
    # an output directory that holds a different run
    assert main(base + ["--task", str(pairs), "--output", str(tmp_path / "g")]) == 0
    code, err = _exit_code(
        base[:-1] + ["9", "--task", str(pairs), "--output", str(tmp_path / "g")], capsys
    )
    assert code == 2 and "different calibration run" in err and "max_new_tokens" in err
    # ... while the same command again just reports the finished run
    assert main(base + ["--task", str(pairs), "--output", str(tmp_path / "g")]) == 0


def test_push_to_hub_errors_are_clear(byte_model_dir, tmp_path, capsys, monkeypatch):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 3)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    argv = [
        "calibrate",
        "--large",
        str(byte_model_dir),
        "--task",
        str(pairs),
        "--source-column",
        "de",
        "--output",
        str(tmp_path / "out"),
        "--max-new-tokens",
        "8",
        "--push-to-hub",
        "someone/calibration",
    ]
    code, err = _exit_code(argv, capsys)
    assert code == 2 and "HF_TOKEN" in err
    monkeypatch.setenv("HF_TOKEN", "hf_secret_test_token_value")
    code, err = _exit_code(argv, capsys)
    # no network: refused before any model is loaded or row decoded, not hours later
    assert code == 2 and "cannot reach the Hub" in err and "hf upload" in err
    assert "hf_secret_test_token_value" not in err
    assert not Path(tmp_path, "out").exists()

    class FailingUpload:  # the Hub answered at the start, then the upload broke
        def upload_folder(self, **_):
            raise ConnectionError("connection reset")

    monkeypatch.setattr(calibrate, "check_hub_access", lambda *_, **__: FailingUpload())
    code, err = _exit_code(argv, capsys)
    assert code == 2 and "could not push" in err and "hf upload" in err
    assert Path(tmp_path, "out", "data").exists()  # the local dataset is kept
