"""bild-align train: recipes parse, training aligns, resume continues, bad recipes fail."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from bild_align import bild_generate
from bild_align.cli import main
from bild_align.configs import TrainRecipe
from bild_align.models.toy import deepen
from bild_align.pipeline.calibrate.command import CalibrateConfig, run_calibration
from bild_align.recipes import RecipeError, load_recipe
from bild_align.testing.helpers import (
    TWO_CPU_ENV,
    TWO_CPU_PROCESSES,
    byte_level_model,
    save_with_byte_tokenizer,
    write_pairs,
)

RECIPES = sorted(Path(__file__).parents[1].joinpath("recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, TrainRecipe)
    assert recipe.learning_rate > 0 and recipe.max_steps > 0
    assert recipe.save_steps % recipe.eval_steps == 0  # the best checkpoint can be kept


def test_paper_recipes_carry_the_paper_setup():
    for name in ("iwslt", "wmt", "xsum", "cnndm"):
        recipe = load_recipe(f"recipes/{name}.yaml")
        effective = recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps
        assert effective == 16 and recipe.max_steps == 500_000
        assert recipe.learning_rate in (0.5e-4, 1e-4, 2e-4, 5e-4)


def test_precedence_defaults_recipe_command_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("task: xsum\ncalibration_dataset: c\noutput_dir: o\nlearning_rate: 1e-3\n")
    recipe = load_recipe(path)
    assert recipe.learning_rate == 1e-3  # recipe over default (YAML "1e-3" is a string)
    assert recipe.max_steps == 500_000  # default
    assert load_recipe(path, {"learning_rate": 2e-4}).learning_rate == 2e-4  # command line


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "task: xsum\ncalibration_dataset: c\noutput_dir: o\nlearnig_rate: 1\n",
            "unknown key(s) learnig_rate",
        ),
        (
            "task: xsum\ncalibration_dataset: c\noutput_dir: o\nmax_steps: many\n",
            "key 'max_steps' must be int",
        ),
        ("task: xsum\noutput_dir: o\n", "missing required key(s) calibration_dataset"),
        ("- a list\n", "a recipe is a mapping"),
        ("task: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_recipes_name_key_and_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        load_recipe(path)
    assert str(path) in str(info.value)


def test_bad_recipe_on_command_line_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("task: xsum\ncalibration_dataset: c\noutput_dir: o\nbatch: 3\n")
    assert main(["train", "--recipe", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) batch" in err and str(path) in err
    assert main(["train", "--recipe", str(tmp_path / "missing.yaml")]) == 2


@pytest.fixture(scope="module")
def alignment_setup(tmp_path_factory):
    """A large model, an unaligned small one (noisy head), and the large model's calibration."""
    root = tmp_path_factory.mktemp("align")
    small = byte_level_model(num_layers=1, d_model=32, seed=3)
    large = deepen(small, extra_layers=2, eps=0.05, seed=4)
    with torch.no_grad():
        small.lm_head.weight.add_(torch.randn_like(small.lm_head.weight) * 0.8)
        small.lm_head.weight[small.lm_head.weight.abs().sum(-1) < 1e-6] = 0.0
    large_dir = save_with_byte_tokenizer(large, root / "large")
    small_dir = save_with_byte_tokenizer(small, root / "small")
    pairs = write_pairs(root / "pairs.jsonl", 160, seed=9)
    calibration = run_calibration(
        CalibrateConfig(
            large=str(large_dir),
            task=str(pairs),
            output=str(root / "calibration"),
            source_column="de",
            target_column="en",
            max_new_tokens=24,
            batch_size=16,
        )
    )
    return {
        "root": root,
        "large": large_dir,
        "small": small_dir,
        "pairs": pairs,
        "calibration": calibration,
    }


def _train_argv(setup, output_dir, *extra):
    return [
        "train",
        "--recipe",
        "recipes/tiny.yaml",
        "--task",
        str(setup["pairs"]),
        "--small-model",
        str(setup["small"]),
        "--large-model",
        str(setup["large"]),
        "--calibration-dataset",
        str(setup["calibration"]),
        "--output-dir",
        str(output_dir),
        "--max-target-length",
        "24",
        *extra,
    ]


def _steps(count):
    """A short run: `count` steps, evaluated and saved at its end."""
    return ["--max-steps", str(count), "--eval-steps", str(count), "--save-steps", str(count)]


def _bild_calls_per_token(small_dir, large_dir, pairs):
    tokenizer = AutoTokenizer.from_pretrained(large_dir)
    small = AutoModelForSeq2SeqLM.from_pretrained(small_dir).eval()
    large = AutoModelForSeq2SeqLM.from_pretrained(large_dir).eval()
    calls = tokens = 0
    for line in pairs.read_text().splitlines()[:12]:
        ids = tokenizer(json.loads(line)["de"], return_tensors="pt").input_ids
        stats = bild_generate(
            small, large, ids, rollback_threshold=2.0, fallback_threshold=0.6, max_new_tokens=24
        ).stats
        calls, tokens = calls + stats.large_calls, tokens + stats.generated
    return calls / tokens


@pytest.mark.slow
def test_training_aligns_the_small_model(alignment_setup, tmp_path):
    output = tmp_path / "aligned"
    assert main(_train_argv(alignment_setup, output)) == 0
    state = json.loads((output / "checkpoint-200" / "trainer_state.json").read_text())
    evals = [entry for entry in state["log_history"] if "eval_loss" in entry]
    assert evals[0]["step"] == 0  # the unaligned model, evaluated before training
    # held-out cross-entropy of the large model's outputs, and BLEU against them
    assert evals[-1]["eval_loss"] < 0.6 * evals[0]["eval_loss"]
    assert evals[-1]["eval_agreement_bleu"] > evals[0]["eval_agreement_bleu"] + 3
    assert (output / "model.safetensors").exists() and (output / "tokenizer_config.json").exists()
    before = _bild_calls_per_token(
        alignment_setup["small"], alignment_setup["large"], alignment_setup["pairs"]
    )
    after = _bild_calls_per_token(output, alignment_setup["large"], alignment_setup["pairs"])
    assert after < before


def _global_step(output):
    states = sorted(
        output.glob("checkpoint-*/trainer_state.json"),
        key=lambda p: int(p.parent.name.split("-")[1]),
    )
    return json.loads(states[-1].read_text())["global_step"] if states else 0


@pytest.mark.slow
def test_resume_after_kill_continues_from_checkpoint(alignment_setup, tmp_path):
    output = tmp_path / "resumed"
    argv = [
        sys.executable,
        "-m",
        "bild_align.cli",
        *_train_argv(
            alignment_setup, output, "--max-steps", "60", "--save-steps", "10", "--eval-steps", "10"
        ),
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while process.poll() is None and time.time() < deadline:
        if _global_step(output) >= 20:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    process.wait()
    killed_at = _global_step(output)
    assert 20 <= killed_at < 60
    optimizer_state = torch.load(
        next(output.glob(f"checkpoint-{killed_at}/optimizer.pt")), weights_only=False
    )
    assert optimizer_state["state"]  # Adafactor's factored moments were saved
    result = subprocess.run(
        argv + ["--resume"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert _global_step(output) == 60
    state = json.loads(next(output.glob("checkpoint-60/trainer_state.json")).read_text())
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == sorted(set(steps))  # resumed: no step logged twice


def _final_eval(output):
    state = json.loads((output / "checkpoint-200" / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "eval_loss" in entry]


@pytest.mark.slow
def test_two_processes_train_as_well_as_one(alignment_setup, tmp_path):
    single = tmp_path / "single"
    assert main(_train_argv(alignment_setup, single)) == 0
    double = tmp_path / "double"
    result = subprocess.run(
        [
            *TWO_CPU_PROCESSES,
            *_train_argv(alignment_setup, double),
            "--per-device-train-batch-size",
            "4",
        ],  # 2 x 4 = the single process's batch of 8
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **TWO_CPU_ENV},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = _final_eval(single), _final_eval(double)
    best_one = min(entry["eval_loss"] for entry in one)
    best_two = min(entry["eval_loss"] for entry in two)
    assert best_two < 0.6 * two[0]["eval_loss"]
    # Data order differs between one and two processes; seeds alone move this toy by ~10%.
    assert abs(best_two - best_one) < 0.2 * best_one
    assert (double / "model.safetensors").exists()


def test_wandb_logging_runs_offline_without_a_login(alignment_setup, tmp_path, monkeypatch):
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    output = tmp_path / "wandb-run"
    argv = _train_argv(
        alignment_setup,
        output,
        "--max-steps",
        "4",
        "--eval-steps",
        "2",
        "--save-steps",
        "2",
        "--report-to",
        "wandb",
    )
    assert main(argv) == 0
    assert list(tmp_path.glob("wandb/offline-run-*"))  # logged, offline, nothing blocked
    assert (output / "model.safetensors").exists()
    assert "WANDB_MODE" not in os.environ  # set for the training only


def _eval_history(output):
    states = sorted(
        output.glob("checkpoint-*/trainer_state.json"),
        key=lambda p: int(p.parent.name.split("-")[1]),
    )
    state = json.loads(states[-1].read_text())
    return [entry for entry in state["log_history"] if "eval_expected_acceptance" in entry]


@pytest.mark.parametrize(
    "objective",
    [
        ("--objective", "token", "--divergence", "forward_kl"),
        ("--objective", "token", "--divergence", "tvd", "--on-policy-fraction", "0.5"),
        (
            "--objective",
            "token",
            "--divergence",
            "jsd",
            "--on-policy-fraction",
            "1",
            "--on-policy-sampling",
            "true",
        ),
    ],
    ids=["token-fkl", "token-tvd-on-policy", "token-jsd-on-policy-sampled"],
)
def test_distillation_objectives_raise_expected_acceptance(alignment_setup, tmp_path, objective):
    """The small model starts close to the large one (only its head is noisy); matching the
    large model's distributions raises the held-out expected acceptance and lowers the large
    model's cross-entropy of the small model's choices."""
    output = tmp_path / "distilled"
    argv = _train_argv(
        alignment_setup,
        output,
        "--max-steps",
        "60",
        "--eval-steps",
        "30",
        "--save-steps",
        "30",
        "--learning-rate",
        "3e-4",
        *objective,
    )
    assert main(argv) == 0
    evals = _eval_history(output)
    assert [entry["step"] for entry in evals] == [0, 30, 60]
    first, last = evals[0], evals[-1]
    assert last["eval_expected_acceptance"] > first["eval_expected_acceptance"] + 0.005
    assert last["eval_large_nll_of_small_choice"] < first["eval_large_nll_of_small_choice"]
    assert 0 <= last["eval_confidence_disagree"] <= 1 and 0 <= last["eval_agreement"] <= 1
    assert (output / "model.safetensors").exists()


def test_on_policy_sequence_objective_trains(alignment_setup, tmp_path):
    """On-policy batches with the sequence objective: the large model's argmax at each position
    of the small model's own outputs as targets."""
    output = tmp_path / "on-policy"
    argv = _train_argv(
        alignment_setup,
        output,
        *_steps(20),
        "--on-policy-fraction",
        "1",
    )
    assert main(argv) == 0
    state = json.loads((output / "checkpoint-20" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert losses and all(0 < loss < 20 for loss in losses)


def test_the_paper_objective_is_measured_too(alignment_setup, tmp_path):
    """With large_model given, the sequence objective logs the same measures (and trains as
    before: no teacher in the step)."""
    output = tmp_path / "sequence"
    argv = _train_argv(
        alignment_setup, output, "--max-steps", "20", "--eval-steps", "20", "--save-steps", "20"
    )
    assert main(argv) == 0
    assert len(_eval_history(output)) == 2


def test_calibrated_objective_lowers_confidence_where_the_small_model_disagrees(
    alignment_setup, tmp_path
):
    """The same steps with and without the calibration term: with it, the held-out
    confidence where the small model disagrees with the large one ends lower."""
    ends = {}
    for objective in ("sequence", "calibrated"):
        output = tmp_path / objective
        argv = _train_argv(
            alignment_setup,
            output,
            "--max-steps",
            "30",
            "--eval-steps",
            "30",
            "--save-steps",
            "30",
            "--objective",
            objective,
            "--calibration-weight",
            "5",
        )
        assert main(argv) == 0
        ends[objective] = _eval_history(output)[-1]
    assert (
        ends["calibrated"]["eval_confidence_disagree"]
        < ends["sequence"]["eval_confidence_disagree"]
    )


def test_token_objective_needs_the_large_model(alignment_setup, tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(
        "task: xsum\ncalibration_dataset: c\noutput_dir: o\nsmall_model: s\nobjective: token\n"
    )
    assert main(["train", "--recipe", str(path)]) == 2
    assert "key 'large_model' is needed" in capsys.readouterr().err
    assert main(["train", "--recipe", str(path), "--divergence", "kl"]) == 2
    assert "key 'divergence' must be one of" in capsys.readouterr().err


class FakeHub:
    """Stands in for `HfApi` after check_hub_access: records the upload, or fails it."""

    def __init__(self, fail=False):
        self.fail, self.uploads = fail, []

    def upload_folder(self, **arguments):
        if self.fail:
            raise ConnectionError("connection reset")
        folder = Path(arguments["folder_path"])
        self.uploads.append({**arguments, "card": (folder / "README.md").read_text()})


def test_push_to_hub_uploads_the_model_with_its_card(alignment_setup, tmp_path, monkeypatch):
    import bild_align.pipeline.publish.command
    import bild_align.runs.hub
    from bild_align.core.policies import BiLDPolicy
    from bild_align.models.saved_policy import save_policy
    from bild_align.runs.model_card import NOT_PUBLISHED

    hub = FakeHub()
    checked = []
    for module in (bild_align.runs.hub, bild_align.pipeline.publish.command):
        monkeypatch.setattr(
            module, "check_hub_access", lambda *a, **k: checked.append((a, k)) or hub
        )
    output = tmp_path / "aligned"
    argv = _train_argv(
        alignment_setup,
        output,
        *_steps(20),
        "--push-to-hub",
        "me/aligned",
        "--private",
    )
    assert main(argv) == 0
    assert checked[0] == (("me/aligned", True), checked[0][1])
    assert checked[0][1]["repo_type"] == "model"
    (upload,) = hub.uploads
    assert upload["repo_id"] == "me/aligned" and upload["ignore_patterns"] == NOT_PUBLISHED
    assert "checkpoint-*" in NOT_PUBLISHED
    card = upload["card"]
    for fact in (
        "# me/aligned: a small model aligned to",
        str(alignment_setup["large"]),  # the large model
        str(alignment_setup["calibration"]),  # the calibration data
        "20 steps in",
        "revision local:",  # the base small model's revision
        "| agreement with the large model's outputs (BLEU) |",
        "objective: sequence",
        "Not tuned yet",
        "custom_generate=bild_align.generate_bild",
    ):
        assert fact in card, fact
    record = json.loads((output / "bild_align_train.json").read_text())["result"]
    assert record["steps"] == 20 and record["metrics_before"] and record["metrics_after"]
    assert (output / "README.md").read_text() == card  # the card stays beside the model
    # after `tune --save`, `bild-align push` renders the tuned setting into the card
    tuned = {
        "task": "t",
        "split": "validation",
        "examples": 9,
        "metric": "bleu",
        "quality": 30.0,
        "drop": 0.2,
        "speedup": 1.8,
        "measured_speedup": 1.7,
        "command": "bild-align tune X",
    }
    save_policy(
        output,
        BiLDPolicy(0.4, 3.0, 8, "entropy"),
        pair={"large": "L", "large_revision": "r", "vocab_size": 384},
        tuned=tuned,
    )
    assert main(["push", str(output), "--repo", "me/aligned"]) == 0
    card = hub.uploads[-1]["card"]
    assert "fallback rule `entropy`, fallback threshold 0.4, rollback threshold 3" in card
    assert "measured 1.70x" in card and "`bild-align tune X`" in card


def test_push_errors_are_clear_and_keep_the_model(alignment_setup, tmp_path, capsys, monkeypatch):
    import bild_align.runs.hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    output = tmp_path / "aligned"
    argv = _train_argv(
        alignment_setup,
        output,
        *_steps(10),
        "--push-to-hub",
        "me/aligned",
    )
    assert main(argv) == 2 and "HF_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", "hf_secret_test_token_value")
    assert main(argv) == 2
    err = capsys.readouterr().err
    # no network: refused before any training, and the token is never printed
    assert "cannot reach the Hub" in err and "bild-align push" in err
    assert "hf_secret_test_token_value" not in err and not output.exists()
    monkeypatch.setattr(bild_align.runs.hub, "check_hub_access", lambda *a, **k: FakeHub(fail=True))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "could not push" in err and f"bild-align push {output} --repo me/aligned" in err
    assert (output / "model.safetensors").is_file() and (output / "README.md").is_file()
    assert main(["push", str(tmp_path), "--repo", "me/x"]) == 2
    assert "holds no model" in capsys.readouterr().err
    assert main(argv[:-2] + ["--private"]) == 2
    assert "--private goes with --push-to-hub" in capsys.readouterr().err


def test_on_policy_batches_do_not_warn_at_every_step(tmp_path):
    """A new-user finding: on-policy training of the demo pair printed transformers' "Both
    `max_new_tokens` and `max_length` seem to have been set" at every on-policy step."""
    argv = [
        "train", "--recipe", "recipes/demo-align.yaml", "--calibration-dataset",
        "task:gettext-de-en", "--output-dir", str(tmp_path / "aligned"), "--max-steps", "3",
        "--eval-steps", "3", "--save-steps", "3", "--eval-rows", "4", "--measure-topk", "0",
        "--per-device-train-batch-size", "4", "--on-policy-fraction", "1",
        "--fallback-head", "false", "--max-target-length", "12",
    ]  # fmt: skip
    import logging

    messages = []
    collect = logging.Handler()
    collect.emit = lambda record: messages.append(record.getMessage())
    transformers_logger = logging.getLogger("transformers")  # it does not propagate
    transformers_logger.addHandler(collect)
    try:
        assert main(argv) == 0
    finally:
        transformers_logger.removeHandler(collect)
    assert not [m for m in messages if "seem to have been set" in m]


def test_a_drafter_trains_its_decoder_and_keeps_the_shared_encoder(alignment_setup, tmp_path):
    """`bild-align drafter` then `train --small-model DRAFTER`: the encoder stays the large
    model's weight for weight, the decoder changes, and the pair then encodes once."""
    from bild_align.models.drafters import encoders_equal, shares_encoder
    from bild_align.models.loading import load_pair

    drafter = tmp_path / "drafter"
    large_dir = alignment_setup["large"]
    assert main(["drafter", "--large", str(large_dir), "--layers", "1", "--output",
                 str(drafter)]) == 0  # fmt: skip
    before = AutoModelForSeq2SeqLM.from_pretrained(drafter).eval()
    output = tmp_path / "aligned"
    argv = _train_argv(alignment_setup, output, *_steps(6))
    argv[argv.index("--small-model") + 1] = str(drafter)
    assert main(argv) == 0
    trained = AutoModelForSeq2SeqLM.from_pretrained(output).eval()
    large = AutoModelForSeq2SeqLM.from_pretrained(large_dir).eval()
    assert encoders_equal(trained, large)
    assert not torch.equal(
        trained.decoder.block[0].layer[2].DenseReluDense.wo.weight,
        before.decoder.block[0].layer[2].DenseReluDense.wo.weight,
    )
    pair = load_pair(str(output), str(large_dir), dtype="float32", device="cpu")
    assert shares_encoder(pair.small, pair.large)
