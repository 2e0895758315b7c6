"""Options that do what their help says, checked before any work."""

import io

import pytest

from bild_align.cli import main
from bild_align.configs import DemoConfig
from bild_align.recipes import load_recipe
from bild_align.testing.helpers import one_error_line as _one_error_line


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
