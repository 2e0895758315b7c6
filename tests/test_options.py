"""Options generated from the config dataclasses: one home per default, defaults < recipe <
command line, and the values typed reach the stage's config unchanged."""

import dataclasses
import inspect

import pytest

from bild_align import cli
from bild_align.configs import (
    BenchConfig,
    CalibrateConfig,
    ChatConfig,
    ChatSettings,
    DemoConfig,
    EvalConfig,
    RecipeEval,
)
from bild_align.core.decoding import bild_generate
from bild_align.core.policies import FALLBACK_THRESHOLD, MAX_SMALL_STEPS, ROLLBACK_THRESHOLD

CONFIGS = (BenchConfig, CalibrateConfig, ChatConfig, ChatSettings, DemoConfig, EvalConfig)


def _default(config_class, name):
    (f,) = [f for f in dataclasses.fields(config_class) if f.name == name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def test_thresholds_have_one_home():
    signature = inspect.signature(bild_generate).parameters
    assert signature["rollback_threshold"].default == ROLLBACK_THRESHOLD
    assert signature["fallback_threshold"].default == FALLBACK_THRESHOLD
    assert signature["max_small_steps"].default == MAX_SMALL_STEPS
    assert _default(EvalConfig, "rollback_threshold") == (ROLLBACK_THRESHOLD,)
    assert _default(EvalConfig, "fallback_threshold") == (FALLBACK_THRESHOLD,)
    assert _default(ChatSettings, "rollback_threshold") == ROLLBACK_THRESHOLD
    assert _default(ChatSettings, "max_small_steps") == MAX_SMALL_STEPS
    assert _default(RecipeEval, "rollback_threshold") == [
        ROLLBACK_THRESHOLD
    ]  # a training recipe's eval:
    assert _default(RecipeEval, "fallback_threshold") == [FALLBACK_THRESHOLD]


@pytest.mark.parametrize("config_class", CONFIGS)
def test_every_field_has_help(config_class):
    for f in dataclasses.fields(config_class):
        assert len(f.metadata.get("help", "")) > 5, (config_class.__name__, f.name)


def _captured(monkeypatch, module: str, function: str, argv: list[str]):
    """Run the CLI with the stage's entry point replaced; returns what it was given."""
    import importlib

    seen = {}
    stage = importlib.import_module(module)
    monkeypatch.setattr(stage, function, lambda config, **kw: seen.update(config=config) or {})
    if module == "bild_align.pipeline.eval.command":
        eval_report = importlib.import_module("bild_align.pipeline.eval.report")
        monkeypatch.setattr(eval_report, "format_results", lambda results: "")
    if module == "bild_align.pipeline.bench.command":
        bench_report = importlib.import_module("bild_align.pipeline.bench.report")
        monkeypatch.setattr(bench_report, "format_table", lambda results: "")
    assert cli.main(argv) == 0
    return seen["config"]


def test_eval_command_line_reaches_the_config(monkeypatch, tmp_path):
    config = _captured(
        monkeypatch,
        "bild_align.pipeline.eval.command",
        "run_eval",
        [
            "eval",
            "--small",
            "S",
            "--large",
            "L",
            "--task",
            "T",
            "--rb",
            "3,4",
            "--sweep",
            "--baselines",
            "large",
            "--max-drop",
            "0.5",
            "--output",
            str(tmp_path / "r.json"),
        ],
    )
    assert (config.small, config.large, config.task) == ("S", "L", "T")
    assert config.rollback_threshold == (3.0, 4.0) and config.fallback_threshold == (
        FALLBACK_THRESHOLD,
    )
    assert config.sweep and config.baselines == ("large",) and config.max_drop == 0.5
    assert config.split == "validation"  # the dataclass default


def test_eval_recipe_sits_between_defaults_and_command_line(monkeypatch, tmp_path, caplog):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text("small: ./aligned\nlarge: L\ntask: T\nrb: [4]\nfb: 0.3\nsplit: test\n")
    config = _captured(
        monkeypatch,
        "bild_align.pipeline.eval.command",
        "run_eval",
        ["eval", "--recipe", str(recipe), "--fb", "0.5"],
    )
    assert config.small == str(tmp_path / "aligned")  # ./ is relative to the recipe
    assert (
        config.rollback_threshold == (4.0,)
        and config.fallback_threshold == (0.5,)
        and config.split == "test"
    )
    # the recipe's rb and fb are the settings' earlier names: read as today's, with a note
    assert "rb -> rollback_threshold, fb -> fallback_threshold" in caplog.text


def test_every_setting_has_one_name_and_its_short_option(monkeypatch, tmp_path, capsys):
    """The configs name the thresholds and the rule as BiLDPolicy does; --rb, --fb and
    --fallback stay as short options; a recipe's earlier name and today's must agree."""
    from bild_align.core.policies import BiLDPolicy
    from bild_align.recipes import RecipeError, check_values

    policy_names = set(inspect.signature(BiLDPolicy).parameters)
    for config_class in (EvalConfig, ChatSettings, RecipeEval, DemoConfig):
        names = {f.name for f in dataclasses.fields(config_class)}
        assert not names & {"rb", "fb", "steps", "fallback", "sweep_rb", "sweep_fb"}
    assert {"rollback_threshold", "fallback_threshold", "max_small_steps", "fallback_rule"} <= (
        policy_names & {f.name for f in dataclasses.fields(EvalConfig)}
    )
    argv = ["eval", "--small", "S", "--large", "L", "--task", "T"]
    for spelled in (
        ["--rollback-threshold", "3", "--fallback-threshold", "0.2", "--fallback-rule", "entropy"],
        ["--rb", "3", "--fb", "0.2", "--fallback", "entropy"],
    ):
        config = _captured(monkeypatch, "bild_align.pipeline.eval.command", "run_eval", [
            *argv, *spelled, "--output", str(tmp_path / "r.json")
        ])  # fmt: skip
        assert (config.rollback_threshold, config.fallback_threshold) == ((3.0,), (0.2,))
        assert config.fallback_rule == "entropy" and config.saved_policy is False
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    assert "--rollback-threshold X[,X...], --rb X[,X...]" in capsys.readouterr().out
    with pytest.raises(RecipeError, match="rb \\(the earlier name\\) and rollback_threshold"):
        check_values(EvalConfig, {"rb": [1.0], "rollback_threshold": [2.0]}, "r.yaml")
    same = check_values(EvalConfig, {"rb": [2.0], "rollback_threshold": [2.0]}, "r.yaml")
    assert same == {"rollback_threshold": (2.0,)}


def test_eval_reads_a_training_recipe(monkeypatch, tmp_path):
    recipe = tmp_path / "train.yaml"
    recipe.write_text(
        "task: T\ncalibration_dataset: C\noutput_dir: out\nlarge_model: L\n"
        "eval_split: test\nsweep_rb: [1, 3]\n"
    )
    config = _captured(
        monkeypatch,
        "bild_align.pipeline.eval.command",
        "run_eval",
        ["eval", "--recipe", str(recipe), "--sweep"],
    )
    assert (config.small, config.large, config.split) == ("out", "L", "test")
    assert config.rollback_threshold == (1.0, 3.0) and config.sweep


def test_a_training_recipe_keeps_its_eval_thresholds_in_a_section(monkeypatch, tmp_path, caplog):
    from bild_align.recipes import RecipeError, load_recipe

    recipe = tmp_path / "train.yaml"
    head = "task: T\ncalibration_dataset: C\noutput_dir: out\nlarge_model: L\n"
    recipe.write_text(head + "eval:\n  split: test\n  rb: [4]\n  fb: [0.5]\n")
    config = _captured(
        monkeypatch,
        "bild_align.pipeline.eval.command",
        "run_eval",
        ["eval", "--recipe", str(recipe)],
    )
    assert (config.split, config.rollback_threshold, config.fallback_threshold) == (
        "test",
        (4.0,),
        (0.5,),
    )
    assert load_recipe(recipe).eval.sweep_rollback_thresholds == [
        1.0,
        2.0,
        3.0,
        5.0,
    ]  # the section's default
    recipe.write_text(head + "eval:\n  rollback_threshold: [-1]\n")
    with pytest.raises(RecipeError, match="'eval': key 'rollback_threshold' must be a list of fin"):
        load_recipe(recipe)
    recipe.write_text(head + "eval:\n  rbb: [1]\n")
    with pytest.raises(RecipeError, match="section 'eval': unknown key"):
        load_recipe(recipe)
    recipe.write_text(head + "eval: 3\n")
    with pytest.raises(RecipeError, match="'eval' is a section"):
        load_recipe(recipe)
    # a recipe written before the section existed still works, and says where the keys go now
    recipe.write_text(head + "eval_split: test\nrb: [2]\n")
    assert load_recipe(recipe).eval.split == "test" and load_recipe(
        recipe
    ).eval.rollback_threshold == [2.0]
    assert "now go in the recipe's `eval:` section" in caplog.text


@pytest.mark.parametrize(
    "text, message",
    [
        ("small: S\nrollback: 3\n", "unknown key(s) rollback"),
        ("rb: fast\n", "key 'rollback_threshold'"),
    ],
)
def test_eval_recipe_mistakes_exit_2(tmp_path, capsys, text, message):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(text)
    assert cli.main(["eval", "--recipe", str(recipe), "--small", "S", "--large", "L"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bench_and_demo_options_reach_their_configs(monkeypatch, tmp_path):
    bench = _captured(
        monkeypatch,
        "bild_align.pipeline.bench.command",
        "run_benchmark",
        ["bench", "--preset", "tiny", "--eps", "0,0.5", "--sampling", "--output", "b.json"],
    )
    assert bench == BenchConfig(preset="tiny", eps=(0.0, 0.5), sampling=True, output="b.json")
    demo = _captured(
        monkeypatch,
        "bild_align.pipeline.demo.command",
        "run_demo",
        ["demo", "--output-dir", str(tmp_path), "--sweep-fb", "0.4", "--rb", "5"],
    )
    assert demo == DemoConfig(
        output_dir=str(tmp_path), sweep_fallback_thresholds=(0.4,), rollback_threshold=5.0
    )


def test_calibrate_options_reach_the_config(monkeypatch, tmp_path):
    config = _captured(
        monkeypatch,
        "bild_align.pipeline.calibrate.command",
        "run_calibration",
        [
            "calibrate",
            "--large",
            "L",
            "--task",
            "T",
            "--output",
            str(tmp_path / "c"),
            "--batch-size",
            "4",
            "--private",
            "--push-to-hub",
            "me/data",
        ],
    )
    assert config == CalibrateConfig(
        large="L",
        task="T",
        output=str(tmp_path / "c"),
        batch_size=4,
        private=True,
        push_to_hub="me/data",
    )


def test_demo_rejects_a_fallback_above_one(capsys):
    assert cli.main(["demo", "--sweep-fb", "0.2,1.5"]) == 2
    assert "--fb and --sweep-fb must lie in [0, 1]" in capsys.readouterr().err


def test_demo_objectives_get_their_own_aligned_folder():
    assert DemoConfig().aligned_folder() == "aligned"
    token = DemoConfig(objective="token", divergence="tvd", on_policy_fraction=0.5)
    assert token.aligned_folder() == "aligned-token-tvd-on-policy-0.5"
    assert token.alignment() == {
        "objective": "token",
        "divergence": "tvd",
        "on_policy_fraction": 0.5,
    }
    assert DemoConfig(on_policy_fraction=1.0).aligned_folder() == "aligned-sequence-on-policy-1"


def test_recipe_keys_given_twice_or_in_two_places_are_refused(tmp_path):
    from bild_align.recipes import RecipeError, load_recipe

    recipe = tmp_path / "train.yaml"
    head = "task: T\ncalibration_dataset: C\noutput_dir: out\nlarge_model: L\n"
    for text, message in (
        ("max_steps: 10\nmax_steps: 20\n", "'max_steps' is given twice"),
        ("eval:\n  rb: [1]\n  rb: [2]\n", "'rb' is given twice"),
        ("rb: [2]\neval:\n  rb: [4]\n", "disagree; keep the one in the eval: section"),
    ):
        recipe.write_text(head + text)
        with pytest.raises(RecipeError, match=message):
            load_recipe(recipe)
    recipe.write_text(head + "rb: [4]\neval:\n  rb: [4]\n")  # the same value twice is fine
    assert load_recipe(recipe).eval.rollback_threshold == [4.0]


def test_a_training_recipe_without_thresholds_leaves_eval_to_the_saved_policy(
    monkeypatch, tmp_path
):
    """The README: eval uses a saved policy when given no thresholds; a training recipe
    without rb / fb gives none (its section's defaults are not thresholds the user chose)."""
    recipe = tmp_path / "train.yaml"
    recipe.write_text("task: T\ncalibration_dataset: C\noutput_dir: out\nlarge_model: L\n")
    config = _captured(
        monkeypatch,
        "bild_align.pipeline.eval.command",
        "run_eval",
        ["eval", "--recipe", str(recipe)],
    )
    assert config.saved_policy is True
    recipe.write_text(recipe.read_text() + "eval:\n  rb: [3]\n")
    config = _captured(
        monkeypatch,
        "bild_align.pipeline.eval.command",
        "run_eval",
        ["eval", "--recipe", str(recipe)],
    )
    assert config.saved_policy is False and config.rollback_threshold == (3.0,)
