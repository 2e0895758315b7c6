"""bild-align eval: results file, exactness at rb=0, sweeps with Pareto plots, user mistakes."""

import csv
import json
from pathlib import Path

import pytest

from bild_align.cli import main
from bild_align.pipeline.eval.command import EvalConfig, run_eval
from bild_align.testing.helpers import byte_level_model, save_with_byte_tokenizer, write_pairs


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("eval") / "pairs.jsonl", 6, seed=5)


def _config(byte_pair_dirs, pairs_file, output, **extra):
    small, large = byte_pair_dirs
    return EvalConfig(
        small=str(small),
        large=str(large),
        task=str(pairs_file),
        source_column="de",
        target_column="en",
        split="validation",
        max_new_tokens=20,
        output=str(output),
        **extra,
    )


def test_results_file_is_complete_and_reproducible(byte_pair_dirs, pairs_file, tmp_path):
    results = run_eval(
        _config(byte_pair_dirs, pairs_file, tmp_path / "a.json", rollback_threshold=(0.0,))
    )
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["config"]["sample_ids"] == [f"validation-{i}" for i in range(6)]
    for key in (
        "small",
        "large",
        "small_revision",
        "large_revision",
        "task",
        "split",
        "rollback_threshold",
        "fallback_threshold",
        "metric",
        "dtype",
        "max_new_tokens",
        "batch_size",
    ):
        assert key in saved["config"]
    assert {"bild_align", "torch", "transformers", "device"} <= set(saved["environment"])
    methods = {row["method"]: row for row in saved["methods"]}
    assert set(methods) == {"large", "engine", "small", "assisted", "bild"}
    # the large model alone on our decoder: generate's tokens, and the second speed reference
    assert methods["engine"]["outputs"] == methods["large"]["outputs"]
    assert methods["bild"]["speedup_over_engine"] == pytest.approx(
        methods["bild"]["speedup"] / methods["engine"]["speedup"]
    )
    large_total = methods["large"]["latency"]["total_s"]
    for row in saved["methods"]:
        assert row["quality"]["metric"] == "bleu" and "tok:13a" in row["quality"]["signature"]
        latency = row["latency"]
        assert latency["count"] == 6 and latency["median_s"] <= latency["total_s"]
        assert row["speedup"] == pytest.approx(large_total / latency["total_s"])  # one clock
        assert len(row["outputs"]) == 6
    # rb = 0 is lossless, and so is assisted generation
    assert methods["bild"]["outputs"] == methods["large"]["outputs"]
    assert methods["bild"]["identical_to_large"] == 6
    assert methods["assisted"]["outputs"] == methods["large"]["outputs"]
    assert methods["bild"]["stats"]["generated"] > 0
    again = run_eval(
        _config(byte_pair_dirs, pairs_file, tmp_path / "b.json", rollback_threshold=(0.0,))
    )
    assert again["config"]["sample_ids"] == results["config"]["sample_ids"]
    assert [r["outputs"] for r in again["methods"]] == [r["outputs"] for r in results["methods"]]


def test_batches_measure_throughput_with_the_same_outputs(byte_pair_dirs, pairs_file, tmp_path):
    one = run_eval(
        _config(byte_pair_dirs, pairs_file, tmp_path / "one.json", rollback_threshold=(0.0,))
    )
    config = _config(
        byte_pair_dirs, pairs_file, tmp_path / "four.json", rollback_threshold=(0.0,), batch_size=4
    )
    batched = run_eval(config)
    methods = {row["method"]: row for row in batched["methods"]}
    # assisted decodes one input at a time
    assert set(methods) == {"large", "engine", "small", "bild"}
    assert batched["config"]["batch_size"] == 4
    for row in batched["methods"]:
        assert row["latency"]["count"] == 2  # 6 examples: a batch of 4, then one of 2
        assert len(row["outputs"]) == 6
    # throughput counts the tokens made: the same outputs, the same count
    made = {name: row["tokens_per_s"] * row["latency"]["total_s"] for name, row in methods.items()}
    assert made["engine"] == pytest.approx(made["large"]) == pytest.approx(made["bild"])
    assert made["bild"] == pytest.approx(methods["bild"]["stats"]["generated"])
    # exact mode is exact row by row, and batching changes no output
    assert methods["bild"]["outputs"] == methods["large"]["outputs"]
    assert methods["bild"]["identical_to_large"] == 6
    assert methods["bild"]["outputs"] == one["methods"][0]["outputs"]
    assert methods["bild"]["stats"]["generated"] == one["methods"][-1]["stats"]["generated"]
    # rows kept in step: still exact, and recorded in the configuration
    config = _config(
        byte_pair_dirs, pairs_file, tmp_path / "shared.json", rollback_threshold=(0.0,),
        batch_size=4, shared_checks=True,
    )  # fmt: skip
    shared = run_eval(config)
    assert shared["config"]["shared_checks"] is True
    assert shared["methods"][-1]["outputs"] == methods["large"]["outputs"]


@pytest.fixture(scope="module")
def bart_pair_dirs(tmp_path_factory):
    """A BART pair (128 positions) saved with a byte-level tokenizer."""
    from bild_align.models.toy import deepen_bart, random_bart

    small = random_bart("bart", vocab_size=384, d_model=32, seed=7)
    large = deepen_bart(small, extra_layers=2, eps=0.05, seed=8)
    root = tmp_path_factory.mktemp("bart_pair")
    return (
        save_with_byte_tokenizer(small, root / "small"),
        save_with_byte_tokenizer(large, root / "large"),
    )


@pytest.mark.parametrize("rb, fb", [(0.0, 0.6), (1.0, 0.4)])
def test_a_bart_pair_decodes_its_batches_together_with_batch_ones_outputs(
    bart_pair_dirs, pairs_file, tmp_path, rb, fb
):
    """BART checkpoints run on the lean BART step: batches of 4 give batch 1's outputs."""
    from transformers import AutoModelForSeq2SeqLM

    from bild_align.core.engines import lean

    dirs = bart_pair_dirs
    assert all(lean.supports(AutoModelForSeq2SeqLM.from_pretrained(d).eval()) for d in dirs)
    runs = [
        run_eval(
            _config(
                dirs,
                pairs_file,
                tmp_path / f"{size}.json",
                rollback_threshold=(rb,),
                fallback_threshold=(fb,),
                **batch,
            )
        )
        for size, batch in (("one", {}), ("four", {"batch_size": 4}))
    ]
    one, four = ({row["method"]: row for row in run["methods"]} for run in runs)
    # the task's default input length (256) is lowered to what the models embed
    assert runs[0]["config"]["max_source_length"] == 128
    for name, row in four.items():
        assert row["outputs"] == one[name]["outputs"], name
    assert four["bild"]["stats"] == one["bild"]["stats"]
    assert four["bild"]["stats"]["small_accepted"] > 0  # the small model's drafts were used
    if rb == 0:
        assert four["bild"]["identical_to_large"] == 6


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--max-new-tokens", "128", "embeds at most 128 output positions"),
        ("--max-source-length", "200", "reads at most 128 input tokens"),
    ],
)
def test_lengths_past_a_position_table_are_refused_up_front(
    bart_pair_dirs, pairs_file, tmp_path, capsys, option, value, message
):
    small, large = bart_pair_dirs
    code = main(
        ["eval", "--small", str(small), "--large", str(large), "--task", str(pairs_file),
         "--source-column", "de", "--target-column", "en", "--split", "validation",
         option, value, "--output", str(tmp_path / "r.json")]
    )  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and option in error and "Traceback" not in error
    assert not (tmp_path / "r.json").exists()


def test_default_lengths_are_lowered_to_a_position_table_and_given_ones_kept():
    from bild_align.models.loading import fit_lengths
    from bild_align.models.toy import random_bart

    bart, t5 = random_bart("marian", seed=0), byte_level_model(num_layers=1)  # 128 positions
    assert fit_lengths({"t5": t5}, None, None, defaults=(256, 128)) == (256, 128)
    assert fit_lengths({"t5": t5, "marian": bart}, None, None, defaults=(256, 128)) == (128, 127)
    assert fit_lengths({"marian": bart}, 100, 50, defaults=(256, 128)) == (100, 50)


def test_sweep_writes_csv_plot_and_best(byte_pair_dirs, pairs_file, tmp_path):
    output = tmp_path / "sweep.json"
    results = run_eval(
        _config(
            byte_pair_dirs,
            pairs_file,
            output,
            rollback_threshold=(0.0, 2.0, 5.0),
            fallback_threshold=(0.2, 0.8),
            sweep=True,
            baselines=("large",),
        )
    )
    with open(output.with_suffix(".csv"), encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {row["pareto"] for row in rows} <= {"0", "1"}
    assert any(row["pareto"] == "1" for row in rows)
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sweep = results["sweep"]
    assert sweep["best"] is not None  # rb = 0 settings lose nothing
    # the large model ran once for the whole sweep
    assert [row["method"] for row in results["methods"]].count("large") == 1


def test_eval_cli_prints_table(byte_pair_dirs, pairs_file, tmp_path, capsys):
    small, large = byte_pair_dirs
    code = main(
        [
            "eval",
            "--small",
            str(small),
            "--large",
            str(large),
            "--task",
            str(pairs_file),
            "--source-column",
            "de",
            "--target-column",
            "en",
            "--max-samples",
            "3",
            "--rb",
            "3",
            "--fb",
            "0.5",
            "--max-new-tokens",
            "12",
            "--baselines",
            "large,small",
            "--output",
            str(tmp_path / "r.json"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "speedup" in out and "bild" in out and "tok:13a" in out


def test_eval_user_mistakes_exit_2(byte_pair_dirs, pairs_file, tmp_path, capsys):
    small, large = byte_pair_dirs
    other_vocab = byte_level_model()
    other_vocab.resize_token_embeddings(300)
    other = save_with_byte_tokenizer(other_vocab, tmp_path / "other")
    base = [
        "eval",
        "--task",
        str(pairs_file),
        "--source-column",
        "de",
        "--target-column",
        "en",
        "--max-new-tokens",
        "4",
        "--output",
        str(tmp_path / "x.json"),
    ]
    cases = [
        (
            ["--small", str(small), "--large", str(large), "--rb", "-1"],
            "--rb must be a number >= 0",
        ),
        (
            ["--small", str(small), "--large", str(large), "--sweep", "--fb", "0.5,1.5"],
            "must lie in [0, 1]",
        ),
        (
            ["--small", str(small), "--large", str(large), "--baselines", "large,beam"],
            "unknown baseline beam",
        ),
        (["--small", str(other), "--large", str(large)], "do not belong together"),
        (["--small", str(small), "--large", str(large), "--rb", "nan"], "finite"),
        (["--small", str(small), "--large", str(large), "--fb", "inf"], "finite"),
        (["--small", str(small), "--large", str(large), "--max-drop", "nan"], "finite"),
        (["--small", str(small), "--large", str(large), "--rb", "1,2"], "need --sweep"),
    ]
    for extra, message in cases:
        try:
            code = main(base + extra)
        except SystemExit as exit_info:
            code = exit_info.code
        err = capsys.readouterr().err
        assert code == 2, extra
        assert message in err and "Traceback" not in err
    assert not Path(tmp_path, "x.json").exists()


def test_recipe_supplies_models_task_and_thresholds(byte_pair_dirs, pairs_file, tmp_path, capsys):
    small, large = byte_pair_dirs
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"task: {pairs_file}\ncalibration_dataset: unused\noutput_dir: {small}\n"
        f"large_model: {large}\nrb: [0.0]\nfb: [0.4]\neval_split: validation\n"
    )
    output = tmp_path / "recipe.json"
    code = main(
        [
            "eval",
            "--recipe",
            str(recipe),
            "--source-column",
            "de",
            "--target-column",
            "en",
            "--max-samples",
            "2",
            "--max-new-tokens",
            "8",
            "--baselines",
            "large",
            "--fb",
            "0.2",
            "--output",
            str(output),
        ]
    )
    assert code == 0
    saved = json.loads(output.read_text())
    assert saved["config"]["small"] == str(small) and saved["config"]["large"] == str(large)
    assert saved["config"]["rollback_threshold"] == [0.0]  # from the recipe
    assert saved["config"]["fallback_threshold"] == [0.2]  # the command line wins
    bild = next(row for row in saved["methods"] if row["method"] == "bild")
    assert bild["identical_to_large"] == 2


def test_a_method_that_fails_keeps_the_others_results(
    byte_pair_dirs, pairs_file, tmp_path, monkeypatch, capsys
):
    """A baseline that raises (transformers' assisted generation, here on the fourth input)
    is reported in one line and left out; the others are measured and written; exit 1. The
    partial log keeps the failure, so a resumed run does not retry the failed method."""
    import bild_align.pipeline.eval.runs as eval_runs

    calls = {"n": 0}
    real = eval_runs.assisted_inputs

    def failing(model, input_ids):
        calls["n"] += 1
        if calls["n"] >= 4:  # the warm-up and two examples pass
            raise IndexError("index out of range in self")
        return real(model, input_ids)

    monkeypatch.setattr(eval_runs, "assisted_inputs", failing)
    small, large = byte_pair_dirs
    output = tmp_path / "r.json"
    code = main(
        ["eval", "--small", str(small), "--large", str(large), "--task", str(pairs_file),
         "--source-column", "de", "--target-column", "en", "--split", "validation",
         "--max-new-tokens", "20", "--rb", "0", "--output", str(output)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    saved = json.loads(output.read_text())
    assert [row["method"] for row in saved["methods"]] == ["large", "engine", "small", "bild"]
    assert all(len(row["outputs"]) == 6 for row in saved["methods"])
    assert saved["failed_methods"] == [
        {"method": "assisted", "setting": {"assistant": "small"},
         "error": "IndexError: index out of range in self"}
    ]  # fmt: skip
    assert "failed: assisted assistant=small: IndexError" in captured.out
    assert "assisted failed" in captured.err and "Traceback" not in captured.err
    assert calls["n"] == 4  # never called again after it failed
