"""Decoder-only pairs through the pipeline: prompts, calibrate, eval and tune."""

import json
import sys

import pyarrow.parquet as pq
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from bild_align.cli import main
from bild_align.data.prompts import Prompter
from bild_align.data.tasks import get_task
from bild_align.testing.helpers import interrupted_on_call, write_pairs


def _greedy_completion(model, tokenizer, prompt, max_new_tokens):
    batch = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens)
    return tokenizer.decode(out[0, batch.input_ids.shape[1] :], skip_special_tokens=True)


def test_prompts_template_truncation_and_completions(causal_pair_dirs):
    small_dir, _ = causal_pair_dirs
    model = AutoModelForCausalLM.from_pretrained(small_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(small_dir)
    task = get_task("gettext-de-en")
    prompter = Prompter.for_model(model, task)
    assert prompter.template == "Translate German to English:\n{source}\n"
    (prompt,) = prompter.prompt_texts(tokenizer, ["Hallo Welt, wie geht es dir heute?"], 5)
    assert prompt == "Translate German to English:\nHallo\n"  # the source cut, not the template
    batch = prompter.encode(tokenizer, ["kurz", "etwas laenger"], 64)
    assert batch.attention_mask[0, 0] == 0 and batch.attention_mask[0, -1] == 1  # left-padded
    out = model.generate(**batch, do_sample=False, max_new_tokens=6)
    texts = prompter.completions(tokenizer, out, batch.input_ids)
    alone = _greedy_completion(
        model, tokenizer, prompter.prompt_texts(tokenizer, ["kurz"], 64)[0], 6
    )
    assert texts[0] == alone and "Translate" not in texts[0]


def _calibrate_argv(large_dir, pairs, output, *extra, max_new_tokens=12):
    return ["calibrate", "--large", str(large_dir), "--task", str(pairs), "--source-column",
            "de", "--target-column", "en", "--output", str(output), "--max-new-tokens",
            str(max_new_tokens), "--batch-size", "4", *extra]  # fmt: skip


def test_calibrate_a_decoder_only_model(causal_pair_dirs, tmp_path):
    _, large_dir = causal_pair_dirs
    pairs = write_pairs(tmp_path / "pairs.jsonl", 9)
    template = "Deutsch: {source}\nEnglisch:"
    output = tmp_path / "calibration"
    argv = _calibrate_argv(large_dir, pairs, output, "--prompt-template", template)
    assert main(argv) == 0
    rows = pq.read_table(output / "data" / "train-00000-of-00001.parquet").to_pylist()
    large = AutoModelForCausalLM.from_pretrained(large_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(large_dir)
    sources = [json.loads(line)["de"] for line in pairs.read_text().splitlines()]
    for row in rows:  # batched, left-padded: each completion as the row alone gives it
        assert row["prompt"] == template.replace("{source}", sources[row["index"]])
        assert row["target"] == _greedy_completion(large, tokenizer, row["prompt"], 12)
    card = (output / "README.md").read_text()
    assert "prompt_template: 'Deutsch: {source}" in card and "chat_template: false" in card
    assert "`prompt` is what it read" in card


def test_decoder_only_mistakes_exit_2_before_work(
    causal_pair_dirs, byte_pair_dirs, tmp_path, capsys
):  # noqa: E501
    _, large_dir = causal_pair_dirs
    pairs = write_pairs(tmp_path / "pairs.jsonl", 3)
    cases = [
        ({"extra": ("--prompt-template", "no field here")}, "has no {source}"),
        ({"extra": ("--chat-template",)}, "has no chat template"),
        ({"max_new_tokens": 600}, "past the model's context of 512"),
    ]
    for case, message in cases:
        argv = _calibrate_argv(
            large_dir, pairs, tmp_path / "out", *case.get("extra", ()),
            max_new_tokens=case.get("max_new_tokens", 12),
        )  # fmt: skip
        assert main(argv) == 2, case
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out" / "data").exists()
    enc_dec = _calibrate_argv(byte_pair_dirs[1], pairs, tmp_path / "out2", "--chat-template")
    assert main(enc_dec) == 2 and "for decoder-only models" in capsys.readouterr().err


def _eval_argv(pair, pairs, output, *extra):
    small, large = map(str, pair)
    return ["eval", "--small", small, "--large", large, "--task", str(pairs), "--split", "train",
            "--source-column", "de", "--target-column", "en", "--max-new-tokens", "10",
            "--output", str(output), *extra]  # fmt: skip


@pytest.mark.parametrize("batch_size", ["1", "3"])
def test_eval_a_decoder_only_pair_exact_mode_equals_the_large_model(
    causal_pair_dirs, tmp_path, batch_size
):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 7, seed=2)
    output = tmp_path / "eval.json"
    argv = _eval_argv(causal_pair_dirs, pairs, output, "--rb", "0", "--fb", "0.6",
                      "--batch-size", batch_size)  # fmt: skip
    assert main(argv) == 0
    results = json.loads(output.read_text())
    methods = {row["method"]: row for row in results["methods"]}
    large = methods["large"]["outputs"]
    assert methods["bild"]["setting"] == {"rb": 0.0, "fb": 0.6}
    assert methods["bild"]["outputs"] == large  # the exact mode, row for row
    assert methods["bild"]["identical_to_large"] == 7 and methods["bild"]["stats"]["generated"]
    if batch_size == "1":  # transformers' assisted generation decodes one input at a time
        assert methods["assisted"]["outputs"] == large
    # completions only: the prompt is not in the outputs that metrics score
    tokenizer = AutoTokenizer.from_pretrained(causal_pair_dirs[1])
    model = AutoModelForCausalLM.from_pretrained(causal_pair_dirs[1]).eval()
    first = json.loads(pairs.read_text().splitlines()[0])["de"]
    prompt = f"{first}\n"  # a local file's default template
    assert large[0] == _greedy_completion(model, tokenizer, prompt, 10)
    assert results["config"]["prompt_template"] == "{source}\n"


def test_tune_a_decoder_only_pair(causal_pair_dirs, tmp_path, monkeypatch):

    def timed(call, device):  # a cost model that does not depend on this machine's load
        out = call()
        stats = out.stats
        if stats is None:
            return 0.02 * out.sequences.shape[1], out
        return 0.002 + 0.001 * stats.small_steps + 0.01 * stats.large_calls, out

    monkeypatch.setattr("bild_align.pipeline.tune.session.timed", timed)
    pairs = write_pairs(tmp_path / "pairs.jsonl", 10, seed=4)
    small, large = map(str, causal_pair_dirs)
    output = tmp_path / "tune.json"
    argv = ["tune", "--small", small, "--large", large, "--task", str(pairs), "--split", "train",
            "--max-new-tokens", "10", "--rb", "0,3", "--fb", "0.1,0.4", "--refine", "0",
            "--timing-rows", "2", "--bootstrap", "100", "--search-batch-size", "4",
            "--source-column", "de", "--target-column", "en", "--output", str(output),
            "--max-drop", "100", "--prompt-template", "DE: {source}\nEN:"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads(output.read_text())
    settings = {point["key"]: point for point in results["settings"]}
    exact = [point for point in results["settings"] if point.get("rb") == 0]
    assert exact and all(point["drop"] == 0 for point in exact)  # rb=0: the large model's text
    assert results["chosen"] is not None and "large" in settings


def test_completion_features_mask_the_prompt_out_of_the_loss(causal_pair_dirs):
    from bild_align.data.prompts import completion_features

    tokenizer = AutoTokenizer.from_pretrained(causal_pair_dirs[0])
    rows = completion_features(
        tokenizer, ["Q: ab\n", "Q: abcd\n"], ["xy", "z"], max_target_length=8
    )
    for prompt, target, ids, labels in zip(
        ["Q: ab\n", "Q: abcd\n"], ["xy", "z"], rows["input_ids"], rows["labels"], strict=True
    ):
        prompt_ids = tokenizer(prompt)["input_ids"]
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        assert ids == prompt_ids + target_ids + [tokenizer.eos_token_id]
        assert labels == [-100] * len(prompt_ids) + target_ids + [tokenizer.eos_token_id]


@pytest.fixture(scope="module")
def causal_calibration(causal_pair_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("causal_calibration")
    pairs = write_pairs(root / "pairs.jsonl", 60, seed=5)
    output = root / "calibration"
    assert main(_calibrate_argv(causal_pair_dirs[1], pairs, output, max_new_tokens=16)) == 0
    return pairs, output


def _train_argv(pair, calibration, output, *extra):
    pairs, data = calibration
    return ["train", "--recipe", "recipes/tiny.yaml", "--task", str(pairs), "--small-model",
            str(pair[0]), "--large-model", str(pair[1]), "--calibration-dataset", str(data),
            "--output-dir", str(output), "--max-target-length", "16", "--eval-rows", "12",
            *extra]  # fmt: skip


def _evaluations(output, key="eval_loss"):
    state = sorted(output.glob("checkpoint-*/trainer_state.json"))[-1]
    return [e for e in json.loads(state.read_text())["log_history"] if key in e]


def test_train_a_decoder_only_small_model(causal_pair_dirs, causal_calibration, tmp_path):
    output = tmp_path / "aligned"
    argv = _train_argv(causal_pair_dirs, causal_calibration, output, "--max-steps", "40",
                       "--eval-steps", "40", "--save-steps", "40", "--learning-rate", "1e-4",
                       "--fallback-head", "true")  # fmt: skip
    assert main(argv) == 0
    before, after = _evaluations(output)
    assert after["eval_loss"] < before["eval_loss"]  # the completions' cross-entropy
    assert after["eval_agreement_bleu"] >= before["eval_agreement_bleu"]
    # the alignment measures, read at the positions that predict each next token: the small
    # model starts as the large one's near-copy, so they agree there (misread positions: ~0)
    measures = _evaluations(output, "eval_expected_acceptance")
    assert len(measures) == 2 and measures[0]["eval_agreement"] > 0.8
    assert (output / "bild_fallback_head.safetensors").is_file()
    small = AutoModelForCausalLM.from_pretrained(output)
    assert not small.config.is_encoder_decoder
    # the aligned model drafts for the large one in eval, exact mode still exact
    eval_out = tmp_path / "eval.json"
    pairs = causal_calibration[0]
    argv = _eval_argv((output, causal_pair_dirs[1]), pairs, eval_out, "--rb", "0",
                      "--max-samples", "5", "--fallback", "learned")  # fmt: skip
    assert main(argv) == 0
    methods = {row["method"]: row for row in json.loads(eval_out.read_text())["methods"]}
    assert methods["bild"]["outputs"] == methods["large"]["outputs"]


def test_token_and_calibrated_objectives_with_a_decoder_only_pair(
    causal_pair_dirs, causal_calibration, tmp_path, capsys
):  # noqa: E501
    output = tmp_path / "token"
    for objective in ("token", "calibrated"):
        argv = _train_argv(causal_pair_dirs, causal_calibration, output / objective,
                           "--max-steps", "10", "--eval-steps", "10", "--save-steps", "10",
                           "--learning-rate", "1e-4", "--objective", objective)  # fmt: skip
        assert main(argv) == 0
        assert len(_evaluations(output / objective, "eval_expected_acceptance")) == 2
    argv = _train_argv(causal_pair_dirs, causal_calibration, tmp_path / "x",
                       "--on-policy-fraction", "0.5")  # fmt: skip
    assert main(argv) == 2 and "encoder-decoder small models" in capsys.readouterr().err


def test_ctrl_c_in_a_decoder_only_calibration_keeps_rows_and_resumes(
    causal_pair_dirs, tmp_path, capsys, monkeypatch
):
    import bild_align.pipeline.calibrate.command as calibrate

    pairs = write_pairs(tmp_path / "pairs.jsonl", 5, seed=6)
    output = tmp_path / "calibration"
    real = calibrate.greedy_texts
    monkeypatch.setattr(calibrate, "greedy_texts", interrupted_on_call(real, 3))
    argv = _calibrate_argv(causal_pair_dirs[1], pairs, output, "--shard-rows", "1")
    argv[argv.index("--batch-size") + 1] = "1"
    assert main(argv) == 130
    assert "interrupted: 2 of 5 rows are kept" in capsys.readouterr().err
    monkeypatch.setattr(calibrate, "greedy_texts", real)
    assert main(argv) == 0
    assert "resuming: 2 of 5 rows kept" in capsys.readouterr().out
    rows = pq.read_table(output / "data" / "train-00000-of-00001.parquet").to_pylist()
    fresh = tmp_path / "fresh"
    assert main(_calibrate_argv(causal_pair_dirs[1], pairs, fresh)) == 0
    assert rows == pq.read_table(fresh / "data" / "train-00000-of-00001.parquet").to_pylist()


def test_a_recipe_builds_a_decoder_only_model_from_scratch(causal_pair_dirs):
    from bild_align.configs import TrainRecipe
    from bild_align.pipeline.train.setup import model_from_config as _from_config

    tokenizer = AutoTokenizer.from_pretrained(causal_pair_dirs[0])
    fields = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2}  # fmt: skip
    recipe = TrainRecipe(task="t", calibration_dataset="c", output_dir="o", small_config=fields)
    model = _from_config(recipe, tokenizer)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    t5_fields = {"d_model": 32, "num_layers": 1}
    recipe = TrainRecipe(task="t", calibration_dataset="c", output_dir="o", small_config=t5_fields)
    t5 = _from_config(recipe, tokenizer)
    assert t5.config.is_encoder_decoder and t5.config.decoder_start_token_id == 0


def test_decoder_only_eval_and_train_resume_after_an_interruption(
    causal_pair_dirs, causal_calibration, tmp_path, capsys, monkeypatch
):
    from bild_align.measure import harness

    pairs = write_pairs(tmp_path / "pairs.jsonl", 4, seed=8)
    output = tmp_path / "eval.json"
    argv = _eval_argv(causal_pair_dirs, pairs, output, "--rb", "0", "--baselines", "large")
    real = harness.timed
    monkeypatch.setattr(harness, "timed", interrupted_on_call(real, 5))
    assert main(argv) == 130  # 2 examples x 2 methods timed, then Ctrl-C in the third
    assert "interrupted: 2 of 4 examples are kept" in capsys.readouterr().err
    monkeypatch.setattr(harness, "timed", real)
    assert main(argv) == 0
    resumed = json.loads(output.read_text())
    assert resumed["config"]["resumed_after"] == 2
    fresh = tmp_path / "fresh.json"
    assert (
        main(_eval_argv(causal_pair_dirs, pairs, fresh, "--rb", "0", "--baselines", "large")) == 0
    )
    outputs = [row["outputs"] for row in json.loads(fresh.read_text())["methods"]]
    assert [row["outputs"] for row in resumed["methods"]] == outputs
    assert outputs[0] == outputs[1]  # the exact mode, resumed or not
    # train: a finished run continues from its last checkpoint when asked for more steps
    aligned = tmp_path / "aligned"
    steps = ("--eval-steps", "5", "--save-steps", "5", "--learning-rate", "1e-4")
    assert (
        main(_train_argv(causal_pair_dirs, causal_calibration, aligned, "--max-steps", "5", *steps))
        == 0
    )  # noqa: E501
    more = _train_argv(causal_pair_dirs, causal_calibration, aligned, "--max-steps", "10", *steps)
    assert main([*more, "--resume"]) == 0
    assert "continuing from" in capsys.readouterr().out and (aligned / "checkpoint-10").is_dir()


def test_chat_wraps_a_decoder_only_input_in_the_prompt_template(causal_pair_dirs, monkeypatch):
    import io

    from bild_align.configs import ChatConfig, ChatSettings
    from bild_align.pipeline.chat import command as chat

    small, large = map(str, causal_pair_dirs)
    seen = []
    real = chat.Console.decode

    def spy(console, text):
        seen.append(console.prompt_template.replace("{source}", text))
        return real(console, text)

    monkeypatch.setattr(chat.Console, "decode", spy)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    config = ChatConfig(small=small, large=large, prompt_template="DE: {source}\nEN:")
    chat.run_chat(config, ChatSettings(max_new_tokens=6), given=set(), lines=["Hallo"])
    model = AutoModelForCausalLM.from_pretrained(large).eval()
    tokenizer = AutoTokenizer.from_pretrained(large)
    expected = _greedy_completion(model, tokenizer, "DE: Hallo\nEN:", 6)
    assert seen == ["DE: Hallo\nEN:"] and expected.strip() in sys.stdout.getvalue()


def test_publishing_mistakes_name_the_command_line_given(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    assert main(["push", str(tmp_path / "model"), "--repo", "me/x"]) == 2
    assert "pushing to me/x needs a Hugging Face token" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["export-generate", str(tmp_path / "file")]) == 2
    assert "is a file; give a folder to export into" in capsys.readouterr().err


def _long_rows(path, count=3, length=700):
    rows = [{"de": "Haus " * (length // 5), "en": "house"}] + [
        {"de": f"das Haus {i}", "en": f"the house {i}"} for i in range(count - 1)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_default_lengths_leave_room_for_the_template_and_the_output(causal_pair_dirs, tmp_path):
    """A new-user finding: a long row with default lengths was refused with "lower
    --max-source-length", an option never given. A default source cut leaves room (the
    context is 512 positions); a length the user gives is still checked."""
    small, large = map(str, causal_pair_dirs)
    pairs = _long_rows(tmp_path / "long.jsonl")
    common = ["--task", str(pairs), "--source-column", "de", "--target-column", "en",
              "--split", "train", "--max-new-tokens", "300", "--baselines", "large"]  # fmt: skip
    output = tmp_path / "e.json"
    assert main(["eval", "--small", small, "--large", large, *common, "--rb", "0",
                 "--output", str(output)]) == 0  # fmt: skip
    config = json.loads(output.read_text())["config"]
    assert config["max_source_length"] + 300 < 512


def test_a_refused_start_leaves_nothing_that_blocks_the_corrected_command(
    causal_pair_dirs, tmp_path, capsys
):
    """A new-user finding: a prompt too long for the model was refused after eval had opened
    its partial log and calibrate had written run.json; the corrected command on the same
    --output was then refused."""
    small, large = map(str, causal_pair_dirs)
    pairs = _long_rows(tmp_path / "long.jsonl", length=100)
    long_template = "Translate German to English, carefully. " * 12 + "{source}\n"
    eval_output = tmp_path / "e.json"
    eval_argv = ["eval", "--small", small, "--large", large, "--task", str(pairs),
                 "--source-column", "de", "--target-column", "en", "--split", "train",
                 "--max-new-tokens", "100", "--baselines", "large", "--rb", "0",
                 "--output", str(eval_output)]  # fmt: skip
    assert main([*eval_argv, "--prompt-template", long_template]) == 2
    assert "context of 512 positions" in capsys.readouterr().err
    assert not list(tmp_path.glob("e.*"))
    assert main(eval_argv) == 0
    calibration = tmp_path / "calibration"
    calibrate_argv = _calibrate_argv(large, pairs, calibration, max_new_tokens=100)
    assert main([*calibrate_argv, "--prompt-template", long_template]) == 2
    assert not calibration.exists() or not any(calibration.iterdir())
    assert main(calibrate_argv) == 0


def test_a_file_of_ready_prompts_needs_no_source_column(causal_pair_dirs, tmp_path, capsys):
    """A new-user finding: a file with `prompt` and `target` columns was refused for having
    no source column; a row with an empty or null prompt was decoded from nothing."""
    small, large = map(str, causal_pair_dirs)
    rows = [{"prompt": f"Translate German to English:\ndas Haus {i}\n", "target": f"the house {i}"}
            for i in range(3)]  # fmt: skip
    pairs = tmp_path / "prompts.jsonl"
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["eval", "--small", small, "--large", large, "--task", str(pairs), "--split", "train",
            "--max-new-tokens", "6", "--baselines", "large", "--rb", "0"]  # fmt: skip
    assert main([*argv, "--output", str(tmp_path / "a.json")]) == 0
    results = json.loads((tmp_path / "a.json").read_text())
    assert len(results["methods"][0]["outputs"]) == 3
    for empty in ("", None):
        bad = [*rows, {"prompt": empty, "target": "x"}]
        pairs.write_text("".join(json.dumps(row) + "\n" for row in bad))
        assert main([*argv, "--output", str(tmp_path / "b.json")]) == 2
        err = capsys.readouterr().err
        assert "row 3 of split 'train' has an empty prompt" in err
