"""The paper's commands as users type them: a published model implies its task, and the
README's commands parse."""

import re
import shlex
from pathlib import Path

import pytest

from bild_align.cli import main
from bild_align.data.tasks import get_task
from bild_align.defaults import fill_defaults
from bild_align.pipeline.calibrate.command import default_output
from bild_align.recipes import load_recipe
from bild_align.testing.helpers import one_error_line as _one_error_line

README = Path(__file__).resolve().parents[1] / "README.md"

PAPER_RECIPES = ("iwslt", "wmt", "xsum", "cnndm")


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
