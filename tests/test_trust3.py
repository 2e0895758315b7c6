"""Trust, round 3 (#21): the paper's commands as users type them, and what a new user broke.

Each test fails on the code before the fix; the issue's closing note lists the cases."""

import io
import json
import logging
import re
import shlex
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bild_align.cli import main
from bild_align.configs import CalibrateConfig, DemoConfig, EvalConfig
from bild_align.data.tasks import get_task
from bild_align.defaults import fill_defaults
from bild_align.errors import UserError
from bild_align.measure import harness
from bild_align.measure.pareto import fastest_within
from bild_align.pipeline.calibrate.command import default_output, run_calibration
from bild_align.pipeline.eval.command import run_eval
from bild_align.pipeline.eval.report import format_results
from bild_align.recipes import load_recipe
from bild_align.runs.records import output_lock, partial_path
from bild_align.testing.helpers import (
    byte_level_model,
    interrupted_on_call,
    save_with_byte_tokenizer,
    write_pairs,
)

README = Path(__file__).resolve().parents[1] / "README.md"
PAPER_RECIPES = ("iwslt", "wmt", "xsum", "cnndm")


@pytest.fixture
def pairs(tmp_path):
    return write_pairs(tmp_path / "pairs.jsonl", 4, seed=5)


def _eval_argv(byte_pair_dirs, task, *extra):
    small, large = map(str, byte_pair_dirs)
    argv = ["eval", "--small", small, "--large", large, "--task", str(task)]
    return [*argv, "--source-column", "de", "--max-new-tokens", "6", "--baselines", "large", *extra]


def _one_error_line(capsys, needle):
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err
    assert err.count("bild-align: error:") == 1, err
    return err


# -- the paper's own commands ---------------------------------------------------------------


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_a_published_large_model_implies_its_task_and_the_folder_its_recipe_reads(name):
    recipe = load_recipe(f"recipes/{name}.yaml")
    filled = fill_defaults({"large": recipe.large_model, "task": None}, "large", "task")
    assert filled["task"] == recipe.task
    assert str(default_output(get_task(filled["task"]))) == recipe.calibration_dataset


def test_calibrate_with_only_a_published_large_model_runs_that_task(monkeypatch, capsys):
    import bild_align.pipeline.calibrate.command as calibrate

    seen = []
    monkeypatch.setattr(calibrate, "run_calibration", lambda config: seen.append(config) or "x")
    assert main(["calibrate", "--large", "kssteven/mT5-large-iwslt2017-de-en"]) == 0
    (config,) = seen
    assert config.task == "iwslt2017-de-en" and config.output is None
    err = capsys.readouterr().err
    assert "demo defaults" not in err and "--task iwslt2017-de-en" in err


def test_any_other_model_without_task_is_refused(byte_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", "--large", str(byte_model_dir), "--output", "cal"]) == 2
    err = _one_error_line(capsys, "--task is needed")
    assert "iwslt2017-de-en" in err and "demo" not in err.split("error:")[0]
    assert not (tmp_path / "cal").exists()
    assert main(["eval", "--large", str(byte_model_dir)]) == 2
    _one_error_line(capsys, "--small is needed")


def _paper_commands() -> list[list[str]]:
    section = (README.parent / "docs" / "reproducing.md").read_text()  # the README links it
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    text = re.sub(r"\\\n\s*", " ", block)
    commands = [line.strip() for line in text.splitlines() if line.startswith("bild-align ")]
    return [shlex.split(command, comments=True)[1:] for command in commands]


def test_the_readme_paper_commands_parse_and_stop_only_at_the_hub(tmp_path, monkeypatch, capsys):
    import datasets

    from bild_align.data import tasks

    def no_network(task, split):  # at once, instead of minutes of retries
        raise tasks.TaskError(f"could not load {task.name} ({task.hub_path}, split {split})")

    def no_hub_dataset(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tasks, "_load_hub_split", no_network)
    monkeypatch.setattr(datasets, "load_dataset", no_hub_dataset)
    monkeypatch.chdir(tmp_path)
    commands = _paper_commands()
    assert len(commands) >= 4 and any(argv[0] == "calibrate" for argv in commands)
    for argv in commands:
        assert main(argv) == 2, argv  # no network here: every model and dataset is on the Hub
        err = capsys.readouterr().err
        assert "demo" not in err and "Traceback" not in err, (argv, err)
        expected = "calibration/iwslt2017-de-en" if argv[0] == "train" else "iwslt2017"
        assert f"could not load {expected}" in err or "could not load the calibration" in err, (
            argv,
            err,
        )
    assert not list(tmp_path.iterdir())  # nothing created by a failed start


# -- outputs: never the input, never each other, never the user's files ----------------------


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


# -- resume: never two models, two processes or damaged lines mixed in -----------------------


def _interrupt_after(monkeypatch, runs):
    real, calls = harness.timed, []

    def timed(call, device):
        calls.append(1)
        if len(calls) > runs:
            raise KeyboardInterrupt
        return real(call, device)

    monkeypatch.setattr(harness, "timed", timed)
    return real


def _config(small, large, pairs, output, **extra):
    return EvalConfig(
        small=str(small), large=str(large), task=str(pairs), source_column="de",
        target_column="en", max_new_tokens=6, output=str(output), baselines=("large",),
        rb=(0.0,), **extra,
    )  # fmt: skip


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


# -- results that mean what they say ---------------------------------------------------------


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


# -- options that do what their help says ----------------------------------------------------


def test_train_takes_switch_words_and_numbers_as_its_help_says():
    from bild_align.cli import build_parser
    from bild_align.options import given_options

    args = build_parser().parse_args(
        ["train", "--learning-rate", "1e-4", "--bf16", "1", "--group-by-length", "no"]
    )
    values = given_options(args)
    assert values == {"learning_rate": 1e-4, "bf16": True, "group_by_length": False}
    recipe = load_recipe("recipes/tiny.yaml", values)
    assert recipe.learning_rate == 1e-4 and recipe.bf16 is True
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "--bf16 true|false" in help_text and "--learning-rate X" in help_text
    # the eval section is the recipe's, not a training option
    assert "--sweep-rb" not in help_text and "--rb" not in help_text


def test_demo_has_the_options_its_messages_name_and_checks_them_first(
    tmp_path, capsys, monkeypatch
):
    from bild_align.pipeline.demo import command as demo

    help_text = io.StringIO()
    with pytest.raises(SystemExit), monkeypatch.context() as patch:
        patch.setattr("sys.stdout", help_text)
        main(["demo", "--help"])
    assert "--max-steps" in help_text.getvalue() and "--overwrite" in help_text.getvalue()
    assert main(["demo", "--calibration-rows", "5", "--output-dir", str(tmp_path / "d")]) == 2
    _one_error_line(capsys, "needs at least 10")
    assert not (tmp_path / "d").exists()
    keys = demo._short_run_keys(DemoConfig(calibration_rows=40, max_steps=50))
    assert keys == {"eval_rows": 8, "max_steps": 50, "eval_steps": 50, "save_steps": 50}
    load_recipe("recipes/demo-align.yaml", keys)  # a valid recipe


def test_demo_overwrite_removes_only_what_a_demo_wrote(tmp_path):
    from bild_align.pipeline.demo import command as demo

    root = tmp_path / "demo"
    (root / "calibration").mkdir(parents=True)
    (root / "calibration" / "run.json").write_text("{}")
    (root / "aligned").mkdir()
    (root / "aligned" / "bild_align_train.json").write_text("{}")
    (root / "aligned-mine").mkdir()
    (root / "aligned-mine" / "notes.txt").write_text("mine")
    (root / "eval_aligned.json").write_text("{}")
    (root / "drafter-1").mkdir()  # the unaligned drafter, its tune and eval results
    (root / "drafter-1" / "bild_drafter.json").write_text("{}")
    (root / "drafter-mine").mkdir()
    (root / "tune-drafter-1.json").write_text("{}")
    (root / "eval_drafter_tuned_batch8.json").write_text("{}")
    demo._remove_demo_outputs(root)
    assert sorted(p.name for p in root.iterdir()) == ["aligned-mine", "drafter-mine"]


# -- damaged state, unwritable folders: one line, and the fix --------------------------------


def _calibrate(model_dir, pairs, output, *extra):
    argv = ["calibrate", "--large", str(model_dir), "--task", str(pairs), "--source-column", "de"]
    return main([*argv, "--max-new-tokens", "6", "--output", str(output), *extra])


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


# -- transformers' deprecations --------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_no_generation_config_deprecation_from_our_generate_calls(byte_pair_dirs, pairs, tmp_path):
    import transformers
    from transformers import AutoModelForSeq2SeqLM, GenerationConfig

    collect = _Collect()
    logger = logging.getLogger("transformers")
    logger.addHandler(collect)
    transformers.logging.set_verbosity_warning()
    try:
        config = _config(*byte_pair_dirs, pairs, tmp_path / "r.json")
        run_eval(EvalConfig(**{**config.__dict__, "baselines": ("large", "small", "assisted")}))
        run_calibration(
            CalibrateConfig(
                large=str(byte_pair_dirs[1]), task=str(pairs), source_column="de",
                max_new_tokens=6, output=str(tmp_path / "cal"),
            )
        )  # fmt: skip
        assert not [m for m in collect.messages if "Passing `generation_config` together" in m]
        # the check can fail: a call passing both is seen
        model = AutoModelForSeq2SeqLM.from_pretrained(byte_pair_dirs[0])
        ids = model.generate(
            input_ids=model.dummy_inputs["input_ids"][:1],
            generation_config=GenerationConfig(decoder_start_token_id=0, eos_token_id=1),
            max_new_tokens=2,
            min_new_tokens=1,
        )
        assert ids.shape[0] == 1
        assert [m for m in collect.messages if "Passing `generation_config` together" in m]
    finally:
        logger.removeHandler(collect)


def test_the_readme_offline_snippet_loads_the_demo_pair_as_float32(monkeypatch, capsys):
    import torch

    library = README.read_text().split("## Library use", 1)[1].split("\n## ", 1)[0]
    snippet = next(
        block.split("```", 1)[0]
        for block in library.split("```python")[1:]
        if "data/demo" in block.split("```", 1)[0]
    )
    monkeypatch.chdir(README.parent)  # the snippet's paths are relative to the checkout
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 - the README's own code
    large, batch, out = namespace["large"], namespace["batch"], namespace["out"]
    assert large.dtype == torch.float32 and namespace["small"].dtype == torch.float32
    expected = large.generate(**batch, do_sample=False, max_new_tokens=128)
    assert out.sequences.tolist() == expected.tolist()
    assert capsys.readouterr().out.strip()


def test_a_bad_switch_word_names_the_words_that_work(capsys):
    assert main(["train", "--recipe", "recipes/demo-align.yaml", "--bf16", "maybe"]) == 2
    _one_error_line(capsys, "argument --bf16: expected true or false, got 'maybe'")


def test_bench_never_replaces_a_file_that_is_not_bench_results(tmp_path, capsys):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    assert main(["bench", "--preset", "tiny", "--output", str(notes)]) == 2
    _one_error_line(capsys, "holds something other than bild-align bench results")
    assert notes.read_text() == '{"mine": true}'


def test_calibrate_does_not_resume_with_other_weights_in_the_large_folder(pairs, tmp_path, capsys):
    large = save_with_byte_tokenizer(byte_level_model(num_layers=1, seed=3), tmp_path / "large")
    output = tmp_path / "cal"
    assert _calibrate(large, pairs, output) == 0
    byte_level_model(num_layers=1, seed=12).save_pretrained(large)  # retrained in place
    assert _calibrate(large, pairs, output) == 2
    _one_error_line(capsys, "differs in: large_model_revision")


# -- no network: a Hub id fails (or reads the cache) at once, not after retries -----------------


def test_hub_reachable_asks_the_name_service_once_and_trusts_proxies(monkeypatch):
    import socket

    from bild_align.runs import hub

    asked = []

    def no_name_service(host, port, *args, **kwargs):
        asked.append(host)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_name_service)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    hub.hub_reachable.cache_clear()
    try:
        assert hub.hub_reachable() is False and hub.hub_reachable() is False
        assert asked == ["huggingface.co"]  # once a process
        hub.hub_reachable.cache_clear()
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # it may resolve names
        assert hub.hub_reachable() is True and asked == ["huggingface.co"]
    finally:
        hub.hub_reachable.cache_clear()


def test_without_network_a_hub_model_reads_only_the_cache_and_a_hub_dataset_is_not_retried(
    monkeypatch, tmp_path
):
    import datasets
    import transformers

    from bild_align.data import tasks
    from bild_align.models import loading as models

    asked = []

    def config_from(name, **options):
        asked.append(options)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    monkeypatch.setattr("bild_align.runs.hub.hub_reachable", lambda: False)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", config_from)
    with pytest.raises(models.ModelLoadError, match="cannot be reached from here"):
        models.load_seq2seq_or_causal("someone/not-cached")
    assert asked == [{"local_files_only": True}]
    local = tmp_path / "model"
    local.mkdir()
    assert models.hub_options(str(local)) == {}  # a folder never asks the Hub

    def load_dataset(*args, **kwargs):
        raise AssertionError("datasets was asked although the Hub cannot be reached")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(tasks.TaskError, match="HF_HUB_OFFLINE=1"):
        tasks.load_rows(get_task("xsum"), "validation", max_samples=2)
