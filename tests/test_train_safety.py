"""train validates every recipe value, never mixes two runs in one output_dir, and trains a
float16 checkpoint with float32 weights."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from bild_align.cli import main
from bild_align.configs import TrainRecipe
from bild_align.pipeline.calibrate.command import CalibrateConfig, run_calibration
from bild_align.pipeline.train.runs import RUN_FILE, complete_checkpoints
from bild_align.pipeline.train.setup import model_and_tokenizer as _model_and_tokenizer
from bild_align.testing.helpers import byte_level_model, save_with_byte_tokenizer, write_pairs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_safety")
    small = byte_level_model(num_layers=1, d_model=32, seed=3)
    small_dir = save_with_byte_tokenizer(small, root / "small")
    half_dir = save_with_byte_tokenizer(small.to(torch.float16), root / "small-fp16")
    pairs = write_pairs(root / "pairs.jsonl", 40, seed=9)
    calibration = run_calibration(
        CalibrateConfig(
            large=str(small_dir), task=str(pairs), output=str(root / "calibration"),
            source_column="de", target_column="en", max_new_tokens=12,
        )
    )  # fmt: skip
    return {"small": small_dir, "half": half_dir, "pairs": pairs, "calibration": calibration}


def _argv(setup, output_dir, *extra, small=None):
    return [
        "train", "--recipe", "recipes/tiny.yaml", "--task", str(setup["pairs"]),
        "--small-model", str(small or setup["small"]), "--calibration-dataset",
        str(setup["calibration"]), "--output-dir", str(output_dir), "--max-target-length", "12",
        "--eval-rows", "8", "--max-steps", "4", "--eval-steps", "2", "--save-steps", "2",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--learning-rate", "nan"], "--learning-rate: expected a finite number, got 'nan'"),
        (["--learning-rate", "0"], "'learning_rate' must be a finite number > 0"),
        (["--max-steps", "0"], "'max_steps' must be >= 1"),
        (["--max-steps", "-5"], "'max_steps' must be >= 1"),
        (["--per-device-train-batch-size", "0"], "'per_device_train_batch_size'"),
        (["--save-steps", "3"], "multiple of 'eval_steps'"),
        (["--report-to", "wandbb"], "'report_to' must be none or wandb"),
        (["--bf16", "true", "--fp16", "true"], "cannot both be true"),
        (["--warmup-steps", "-1"], "'warmup_steps' must be >= 0"),
        (["--dropout-rate", "1.5"], "'dropout_rate' must be in [0, 1)"),
        (["--save-dtype", "fp8"], "'save_dtype'"),
        (["--fp16", "true"], "overflow in float16"),
    ],
)
def test_bad_values_exit_2_before_anything_is_written(setup, tmp_path, capsys, extra, message):
    output = tmp_path / "out"
    assert main(_argv(setup, output, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not output.exists() or not any(p.name != RUN_FILE for p in output.iterdir())


def test_output_dir_of_another_run_or_of_the_user_is_refused(setup, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(_argv(setup, mine)) == 2
    assert "not a bild-align training run" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    output = tmp_path / "run"
    assert main(_argv(setup, output)) == 0
    finished = (output / "model.safetensors").read_bytes()
    assert main(_argv(setup, output, "--learning-rate", "0.01")) == 2  # another run
    assert "differs in: learning_rate" in capsys.readouterr().err
    assert main(_argv(setup, output, "--learning-rate", "0.01", "--resume")) == 2
    assert main(_argv(setup, output)) == 2  # the same run again, without --resume
    assert "pass --resume" in capsys.readouterr().err
    assert (output / "model.safetensors").read_bytes() == finished
    # the same run may go on for longer
    assert main(_argv(setup, output, "--resume", "--max-steps", "6")) == 0
    state = json.loads((complete_checkpoints(output)[-1] / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_resume_skips_an_incomplete_checkpoint(setup, tmp_path, capsys):
    output = tmp_path / "run"
    assert main(_argv(setup, output)) == 0
    last = complete_checkpoints(output)[-1]
    assert last.name == "checkpoint-4"
    stray = output / "checkpoint-9"
    shutil.copytree(last, stray)
    (stray / "optimizer.pt").unlink()  # a save cut short by a crash
    (output / "checkpoint-12").mkdir()  # an empty one
    assert main(_argv(setup, output, "--resume", "--max-steps", "6")) == 0
    out = capsys.readouterr().out
    assert "skipping incomplete checkpoint(s) checkpoint-12, checkpoint-9" in out
    state = json.loads((output / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_float16_checkpoint_trains_in_float32_and_is_saved_as_asked(setup, tmp_path):
    recipe = TrainRecipe(
        task="x", calibration_dataset="c", output_dir="o", small_model=str(setup["half"])
    )
    model, _ = _model_and_tokenizer(recipe)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    for extra, dtype in (((), torch.float16), (("--save-dtype", "float32"), torch.float32)):
        output = tmp_path / f"out-{dtype}"
        assert main(_argv(setup, output, *extra, small=setup["half"])) == 0
        saved = AutoModelForSeq2SeqLM.from_pretrained(output)
        assert saved.dtype == dtype
        assert all(torch.isfinite(p).all() for p in saved.parameters())


def test_recipe_paths_starting_with_dot_are_relative_to_the_recipe(tmp_path, monkeypatch):
    from bild_align.recipes import load_recipe

    folder = tmp_path / "project" / "recipes"
    folder.mkdir(parents=True)
    recipe_file = folder / "mine.yaml"
    recipe_file.write_text(
        "task: ./pairs.jsonl\ncalibration_dataset: calibration/x\noutput_dir: runs/x\n"
        "small_model: ../models/small\nlarge_model: google/mt5-small\n"
    )
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(recipe_file, {"tokenizer": "./tok"})
    assert recipe.small_model == str(tmp_path / "project" / "models" / "small")
    assert recipe.task == str(folder / "pairs.jsonl")
    assert recipe.calibration_dataset == "calibration/x" and recipe.output_dir == "runs/x"
    assert recipe.large_model == "google/mt5-small"  # a Hub id stays one
    assert recipe.tokenizer == "./tok"  # the command line is relative to where it is typed


def test_shipped_recipes_work_from_any_folder(tmp_path, monkeypatch, caplog):
    import logging

    from bild_align.recipes import RecipeError, load_recipe

    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="bild_align"):  # the CLI shows it on stderr
        recipe = load_recipe("recipes/demo-align.yaml")
    assert (Path(recipe.small_model) / "config.json").is_file()
    assert "using the built-in recipe" in caplog.text
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe("elsewhere/demo-align.yaml")  # another folder is not the shipped one


def test_the_same_model_by_another_path_is_the_same_run(setup, tmp_path, monkeypatch):
    from bild_align.pipeline.train.runs import run_fingerprint as _fingerprint

    monkeypatch.chdir(setup["small"].parent)
    by_name = TrainRecipe(task="x", calibration_dataset="c", output_dir="o", small_model="small")
    by_path = TrainRecipe(
        task="x", calibration_dataset="c", output_dir="o", small_model=str(setup["small"])
    )
    assert _fingerprint(by_name) == _fingerprint(by_path)


def test_a_quoted_home_path_is_expanded(setup, monkeypatch):
    monkeypatch.setenv("HOME", str(setup["small"].parent))
    recipe = TrainRecipe(task="x", calibration_dataset="c", output_dir="o", small_model="~/small")
    model, tokenizer = _model_and_tokenizer(recipe)
    assert model.config.vocab_size == 384 and len(tokenizer) == 384


def test_a_misspelt_calibration_folder_is_named_as_such(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(setup["calibration"].parent)
    for typo, message in (("calibraton", "there is no folder calibraton here"),
                          ("./calibraton", "does not exist; did you mean")):  # fmt: skip
        argv = _argv(setup, tmp_path / typo.strip("./"))
        argv[argv.index("--calibration-dataset") + 1] = typo
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("bild-align: error:") == 1, err


def test_a_failed_start_leaves_the_output_dir_usable(setup, tmp_path, capsys):
    output = tmp_path / "run"
    argv = _argv(setup, output)
    argv[argv.index("--calibration-dataset") + 1] = str(tmp_path / "no-such-calibration")
    assert main(argv) == 2
    capsys.readouterr()
    assert main(_argv(setup, output)) == 0  # the corrected command is not "another run"


def test_resume_skips_a_checkpoint_with_truncated_weights(setup, tmp_path, capsys):
    output = tmp_path / "run"
    assert main(_argv(setup, output)) == 0
    last = complete_checkpoints(output)[-1]
    weights = last / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a disk that filled up, a copy cut short
    assert main(_argv(setup, output, "--resume", "--max-steps", "6")) == 0
    captured = capsys.readouterr()
    assert f"skipping incomplete checkpoint(s) {last.name}" in captured.out
    assert "Traceback" not in captured.err
    state = json.loads((output / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_a_damaged_run_record_is_named(setup, tmp_path, capsys):
    output = tmp_path / "run"
    assert main(_argv(setup, output)) == 0
    (output / "bild_align_train.json").write_text('{"finger')
    assert main(_argv(setup, output, "--resume")) == 2
    err = capsys.readouterr().err
    assert "bild_align_train.json is damaged" in err and "Traceback" not in err
