"""bild-align tune and its parts: fallback rules, the cost model, the paired bootstrap, the
saved policy, resume after Ctrl-C, and one line with exit 2 for every user mistake."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bild_align import autoregressive_generate, bild_generate
from bild_align.cli import main
from bild_align.core.policies import BiLDPolicy
from bild_align.core.sampling import confidence as rule_confidence
from bild_align.errors import UserError
from bild_align.measure.metrics import score, score_from_statistics, segment_statistics
from bild_align.measure.significance import paired_drop, resample_weights
from bild_align.models.saved_policy import load_policy, saved_policy_for
from bild_align.models.toy import deepen, random_inputs, random_llama, random_t5
from bild_align.pipeline.tune.search import (
    budget_met,
    fit_costs,
    modelled_seconds,
    neighbours,
    setting,
    setting_fields,
    setting_of,
)
from bild_align.pipeline.tune.session import TuneSession
from bild_align.testing.helpers import write_pairs
from bild_align.testing.scripted import ScriptedSeq2Seq, next_token

# --- fallback rules --------------------------------------------------------------------------


def test_entropy_confidence_is_one_when_certain_and_one_over_vocab_when_uniform():
    probabilities = torch.tensor(
        [[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]]
    )
    confidence = rule_confidence(probabilities, "entropy")
    assert confidence[0].item() == pytest.approx(1.0)
    assert confidence[1].item() == pytest.approx(0.25)
    top = rule_confidence(probabilities, "max_prob")
    assert (confidence <= top + 1e-6).all() and confidence[2] < top[2]


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="fallback_rule"):
        BiLDPolicy(fallback_rule="vibes")
    small = random_t5(vocab_size=40, d_model=16, num_layers=1)
    with pytest.raises(ValueError, match="fallback_rule"):
        bild_generate(small, small, torch.tensor([[3, 4, 1]]), fallback_rule="max-prob")


def test_entropy_falls_back_where_a_confident_top_hides_a_flat_rest():
    """A 0.5 top probability over 64 tokens: max_prob at fb=0.2 keeps it; its exp(-entropy)
    is about 0.06, so the entropy rule hands over."""
    script = lambda prefix: (next_token(prefix), 0.5)  # noqa: E731
    large = ScriptedSeq2Seq(lambda prefix: (next_token(prefix), 0.9))
    ids = torch.tensor([[5, 6, 1]])
    by_top = bild_generate(
        ScriptedSeq2Seq(script), large, ids, fallback_threshold=0.2, max_new_tokens=6
    )
    by_entropy = bild_generate(
        ScriptedSeq2Seq(script),
        large,
        ids,
        fallback_threshold=0.2,
        fallback_rule="entropy",
        max_new_tokens=6,
    )
    assert by_top.stats.fallbacks == 0 and by_top.stats.small_accepted > 0
    assert by_entropy.stats.fallbacks == by_entropy.stats.small_steps > 0
    assert by_entropy.stats.small_accepted == 0


def _pairs():
    for seed, (vocab, confidence) in enumerate(((96, 1.0), (128, 8.0), (160, 6.0))):
        small = random_t5(
            vocab_size=vocab, d_model=32, num_layers=1, confidence=confidence, seed=seed
        )
        yield small, deepen(small, extra_layers=2, eps=0.1, head_noise=0.3, seed=seed + 50)
    small = random_llama(vocab_size=96, seed=7)
    from bild_align.models.toy import deepen_llama

    yield small, deepen_llama(small, extra_layers=2, eps=0.1, seed=8)


@pytest.mark.parametrize("fb", [0.05, 0.3, 1.5])
def test_entropy_rule_keeps_the_oracles(fb):
    """rb=0 is the large model's greedy output under either rule, alone and in a batch; so
    is fb>1 (always fall back) at any rb."""
    for small, large in _pairs():
        vocab = small.config.vocab_size
        batch = random_inputs(3, vocab_size=vocab, seed=vocab)
        ids = torch.nn.utils.rnn.pad_sequence(
            [row[0] for row in batch], batch_first=True, padding_value=0
        )
        mask = (ids != 0).long()
        mask[:, 0] = 1
        expected = autoregressive_generate(large, ids, mask, max_new_tokens=20)
        rb = 5.0 if fb > 1 else 0.0
        out = bild_generate(
            small,
            large,
            ids,
            mask,
            fallback_threshold=fb,
            rollback_threshold=rb,
            fallback_rule="entropy",
            max_new_tokens=20,
        )
        assert out.sequences.tolist() == expected.sequences.tolist()
        for row, input_ids in enumerate(batch):
            alone = bild_generate(
                small,
                large,
                input_ids,
                fallback_threshold=fb,
                rollback_threshold=rb,
                fallback_rule="entropy",
                max_new_tokens=20,
            )
            assert alone.from_small[0] == out.from_small[row]


def test_a_policy_object_is_the_same_as_its_arguments():
    small = random_t5(vocab_size=128, d_model=32, num_layers=1, confidence=8.0, seed=2)
    large = deepen(small, extra_layers=2, eps=0.05, head_noise=0.3, seed=3)
    for input_ids in random_inputs(3, vocab_size=128, seed=4):
        by_args = bild_generate(
            small,
            large,
            input_ids,
            fallback_threshold=0.2,
            rollback_threshold=3.0,
            max_small_steps=6,
            fallback_rule="entropy",
            max_new_tokens=20,
        )
        by_policy = bild_generate(
            small, large, input_ids, policy=BiLDPolicy(0.2, 3.0, 6, "entropy"), max_new_tokens=20
        )
        assert by_args.sequences.tolist() == by_policy.sequences.tolist()
        assert by_args.stats == by_policy.stats


# --- the pieces of tune -----------------------------------------------------------------------


def test_segment_statistics_add_up_to_the_corpus_score():
    hypotheses = ["the cat sat on the mat", "a dog barks", "hello", "one two three four"]
    references = ["the cat sat on a mat", "a dog barked", "hello there", "one two three four"]
    for metric in ("bleu", "rougeL"):
        stats = segment_statistics(metric, hypotheses, references)
        assert len(stats) == 4
        expected = score(metric, hypotheses, references)["score"]
        assert score_from_statistics(metric, stats.sum(0)) == pytest.approx(expected)


def test_paired_bootstrap_bounds_the_drop():
    references = [f"word{i} and more words here {i}" for i in range(60)]
    same = segment_statistics("bleu", references, references)
    worse_outputs = [r if i % 3 else "nothing like it" for i, r in enumerate(references)]
    worse = segment_statistics("bleu", worse_outputs, references)
    weights = resample_weights(60, samples=300, seed=1)
    assert weights.sum(1).tolist() == [60.0] * 300
    identical = paired_drop("bleu", same, same, weights)
    assert identical == {"drop": 0.0, "upper": 0.0}
    dropped = paired_drop("bleu", same, worse, weights)
    assert dropped["drop"] > 10 and dropped["upper"] >= dropped["drop"]


def test_cost_model_recovers_known_costs_and_never_goes_negative():
    rng = np.random.default_rng(0)
    features = rng.integers(1, 40, size=(50, 5)).astype(float)
    truth = np.array([0.001, 0.006, 0.0002, 0.002, 0.003])
    costs = fit_costs(features, features @ truth)
    assert list(costs.values()) == pytest.approx(truth.tolist(), rel=1e-6)
    assert modelled_seconds(costs, features[0]) == pytest.approx(float(features[0] @ truth))
    # a feature that only adds noise anticorrelated with time is dropped, not given a negative cost
    noisy = fit_costs(np.c_[features[:, :4], -features[:, 1]], features[:, :4] @ truth[:4])
    assert min(noisy.values()) >= 0


def test_neighbours_move_one_setting_at_a_time():
    start = setting("max_prob", 4.0, 0.2, 10)
    found = neighbours(start)
    assert start not in found and len(found) == 6
    for other in found:
        before, after = setting_fields(start), setting_fields(other)
        changed = [before[name] != after[name] for name in ("rb", "fb", "steps")]
        assert sum(changed) == 1 and other.fallback_rule == "max_prob"
    assert setting("entropy", 1.0, 0.2, 10) in neighbours(setting("entropy", 0.0, 0.2, 10))
    assert all(s.fallback_threshold <= 1 for s in neighbours(setting("max_prob", 2.0, 0.9, 3)))
    assert budget_met({"upper_drop": 0.9, "lower_quality": 20}, 1.0, None)
    assert not budget_met({"upper_drop": 0.9, "lower_quality": 20}, 1.0, 25.0)


# --- the command ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _steady_clock(monkeypatch):
    """Tune's timings from the decision counts, so that its choices do not depend on how busy
    the machine is."""

    def timed(call, device):
        out = call()
        stats = out.stats
        if stats is None:  # transformers' generate: twice the large model's engine
            return 0.02 * out.sequences.shape[1], out
        return 0.002 + 0.001 * stats.small_steps + 0.01 * stats.large_calls, out

    monkeypatch.setattr("bild_align.pipeline.tune.session.timed", timed)


def _argv(byte_pair_dirs, task, output, *extra):
    small, large = map(str, byte_pair_dirs)
    return [
        "tune", "--small", small, "--large", large, "--task", str(task), "--split", "train",
        "--max-new-tokens", "12", "--rb", "0,3", "--fb", "0.1,0.4", "--refine", "1",
        "--timing-rows", "3", "--bootstrap", "200", "--search-batch-size", "4",
        "--source-column", "de", "--target-column", "en", "--output", str(output), *extra,
    ]  # fmt: skip


@pytest.fixture
def task(tmp_path):
    return write_pairs(tmp_path / "pairs.jsonl", 12, seed=3)


def test_tune_writes_the_front_and_saves_the_choice(byte_pair_dirs, task, tmp_path, capsys):
    output = tmp_path / "out" / "tune.json"
    code = main(_argv(byte_pair_dirs, task, output, "--max-drop", "100", "--save"))
    assert code == 0, capsys.readouterr().err
    results = json.loads(output.read_text())
    assert results["examples"] == 12 and results["budget"]["max_drop"] == 100
    keys = {point["key"] for point in results["settings"]}
    assert {"large", "small"} <= keys
    assert len(keys) > 2 + 8  # the coarse grid (2 rules x 2 x 2) and a refinement round
    assert results["front"] and all(point["on_front"] for point in results["front"])
    chosen = results["chosen"]
    assert chosen["within_budget"]
    assert min(results["cost_model"]["seconds_per_unit"].values()) >= 0
    # the choice goes by measured speed among the settings timed; the exact mode wins a tie
    timed = [p for p in results["settings"] if "measured_speedup" in p and p["within_budget"]]
    fastest = max(p["measured_speedup"] for p in timed)
    assert chosen["measured_speedup"] == fastest or (
        chosen["rb"] == 0 and chosen["measured_speedup"] >= 0.97 * fastest
    )
    assert any(p["rb"] == 0 for p in timed)  # the fastest exact mode is always timed
    assert output.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    # the decodings are kept for a rerun with another budget
    assert (tmp_path / "out" / "tune.json.partial.jsonl").exists()
    policy = load_policy(byte_pair_dirs[0])
    assert policy == setting_of(chosen)
    saved = json.loads((byte_pair_dirs[0] / "bild_policy.json").read_text())
    assert saved["pair"]["large"] == str(byte_pair_dirs[1])
    with pytest.raises(UserError, match="tuned with the large model"):
        saved_policy_for(byte_pair_dirs[0], "another revision", saved["pair"]["vocab_size"])
    (byte_pair_dirs[0] / "bild_policy.json").unlink()
    assert "chosen (*)" in capsys.readouterr().out


def test_a_budget_no_setting_meets_writes_the_front_and_exits_2(
    byte_pair_dirs, task, tmp_path, capsys
):
    output = tmp_path / "tune.json"
    assert main(_argv(byte_pair_dirs, task, output, "--min-quality", "1000", "--refine", "0")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bild-align: error: no setting meets the budget (quality >= 1000)")
    assert "closest is" in err[-1]
    results = json.loads(output.read_text())
    assert results["chosen"] is None and results["closest"]["method"] == "bild"


def test_ctrl_c_keeps_finished_decodings_and_the_rerun_resumes(
    byte_pair_dirs, task, tmp_path, monkeypatch, capsys
):

    output = tmp_path / "tune.json"
    argv = _argv(byte_pair_dirs, task, output, "--max-drop", "100", "--refine", "0")
    assert main(argv) == 0
    expected = json.loads(output.read_text())
    output.unlink()
    (tmp_path / "tune.json.partial.jsonl").unlink()  # a fresh start
    real, calls = TuneSession.decoded, []

    def interrupted(self, setting, progress):
        calls.append(setting)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, setting, progress)

    monkeypatch.setattr(TuneSession, "decoded", interrupted)
    assert main(argv) == 130
    assert "4 finished decodings are kept" in capsys.readouterr().err
    partial = tmp_path / "tune.json.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 5  # the fingerprint and four decodings
    monkeypatch.setattr(TuneSession, "decoded", real)
    assert main(argv) == 0
    assert "resuming: 4 decodings already done" in capsys.readouterr().out
    again = json.loads(output.read_text())
    assert [(p["key"], p["quality"]) for p in again["settings"]] == [
        (p["key"], p["quality"]) for p in expected["settings"]
    ]


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--max-drop", "-1"], "--max-drop must be >= 0"),
        (["--max-drop", "nan"], "finite number"),
        (["--min-quality", "inf"], "finite number"),
        (["--fallback", "max_prob,learnt"], "unknown fallback rule learnt"),
        (["--fb", "0.1,1.5"], "--fb must lie in [0, 1]"),
        (["--confidence", "1"], "--confidence must lie in [0.5, 1)"),
        (["--refine", "-1"], "whole number >= 0"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(byte_pair_dirs, task, tmp_path, capsys, extra, words):
    # option values argparse refuses are one line and exit 2 like the rest
    assert main(_argv(byte_pair_dirs, task, tmp_path / "t.json", *extra)) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "t.json").exists()


def test_save_needs_a_local_small_model_before_any_work(byte_pair_dirs, task, tmp_path, capsys):
    argv = _argv(byte_pair_dirs, task, tmp_path / "t.json", "--save")
    argv[argv.index("--small") + 1] = "someone/small-model"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not a local folder" in err and err.count("bild-align: error:") == 1
    assert not (tmp_path / "t.json").exists()


def test_a_file_that_is_not_tune_results_is_never_replaced(byte_pair_dirs, task, tmp_path, capsys):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    assert main(_argv(byte_pair_dirs, task, notes)) == 2
    assert "holds something other than bild-align tune results" in capsys.readouterr().err
    assert notes.read_text() == '{"mine": 1}'
    assert main(_argv(byte_pair_dirs, task, tmp_path / "t.csv")) == 2
    assert "give a .json file name" in capsys.readouterr().err


def test_saved_policy_of_another_vocabulary_is_refused(tmp_path):
    from bild_align.models.saved_policy import save_policy

    folder = tmp_path / "small"
    folder.mkdir()
    pair = {"large": "L", "large_revision": "r1", "small": "S", "vocab_size": 100}
    save_policy(folder, BiLDPolicy(0.1, 4.0, 12, "entropy"), pair=pair, tuned={})
    assert saved_policy_for(folder, "r1", 100)[0] == BiLDPolicy(0.1, 4.0, 12, "entropy")
    with pytest.raises(UserError, match="100 shared tokens"):
        saved_policy_for(folder, "r1", 101)
    (folder / "bild_policy.json").write_text("{broken")
    with pytest.raises(UserError, match="damaged"):
        saved_policy_for(folder, "r1", 100)
    assert saved_policy_for(tmp_path, "r1", 100) is None


# --- eval and chat read a saved policy --------------------------------------------------------


@pytest.fixture
def policy_pair(byte_pair_dirs, tmp_path):
    """A copy of the byte pair whose small folder holds a tuned policy for its large model."""
    import shutil

    from transformers import AutoTokenizer

    from bild_align.models.loading import model_revision
    from bild_align.models.saved_policy import save_policy

    small = shutil.copytree(byte_pair_dirs[0], tmp_path / "small")
    large = byte_pair_dirs[1]
    pair = {"large": str(large), "large_revision": model_revision(None, str(large))}
    pair |= {"small": str(small), "vocab_size": len(AutoTokenizer.from_pretrained(large))}
    tuned = {"task": "pairs", "split": "validation"}
    save_policy(small, BiLDPolicy(0.25, 3.5, 7, "entropy"), pair=pair, tuned=tuned)
    return small, large


def _eval(small, large, task, output, *extra):
    return main(
        ["eval", "--small", str(small), "--large", str(large), "--task", str(task),
         "--source-column", "de", "--max-new-tokens", "6", "--baselines", "large",
         "--output", str(output), *extra]
    )  # fmt: skip


def test_eval_uses_the_saved_policy_when_given_no_thresholds(policy_pair, task, tmp_path, capsys):
    assert _eval(*policy_pair, task, tmp_path / "a.json") == 0
    assert "using the tuned policy in" in capsys.readouterr().err
    config = json.loads((tmp_path / "a.json").read_text())["config"]
    names = ("rollback_threshold", "fallback_threshold", "max_small_steps", "fallback_rule")
    assert tuple(config[name] for name in names) == (
        [3.5],
        [0.25],
        7,
        "entropy",
    )
    assert _eval(*policy_pair, task, tmp_path / "b.json", "--rb", "2") == 0
    assert "tuned policy" not in capsys.readouterr().err
    config = json.loads((tmp_path / "b.json").read_text())["config"]
    assert (config["rollback_threshold"], config["fallback_rule"]) == ([2.0], "max_prob")


def test_a_policy_tuned_for_another_large_model_is_refused(
    policy_pair, byte_pair_dirs, task, tmp_path, capsys
):
    other_large = byte_pair_dirs[0]  # the small model stands in for another large one
    assert _eval(policy_pair[0], other_large, task, tmp_path / "a.json") == 2
    err = capsys.readouterr().err
    assert "was tuned with the large model" in err and str(policy_pair[1]) in err
    assert err.count("bild-align: error:") == 1


def test_chat_uses_the_saved_policy_and_switches_rules(policy_pair, capsys):
    from bild_align.configs import ChatConfig, ChatSettings
    from bild_align.pipeline.chat.command import run_chat

    small, large = map(str, policy_pair)
    settings = ChatSettings(max_new_tokens=6)
    run_chat(ChatConfig(small=small, large=large), settings, given={"max"}, lines=[
        "/settings", "/fallback max_prob", "/fallback vibes", "das Haus"
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert "using the tuned policy" in captured.err
    assert "rb=3.5 fb=0.25 steps=7 fallback=entropy" in captured.out
    assert "fallback=max_prob" in captured.out and "use /fallback max_prob or" in captured.out
    settings = ChatSettings(max_new_tokens=6, rollback_threshold=1.0)
    run_chat(
        ChatConfig(small=small, large=large),
        settings,
        given={"rollback_threshold"},
        lines=["/settings"],
    )
    assert "tuned policy" not in capsys.readouterr().err and settings.fallback_rule == "max_prob"


def test_the_summary_shows_the_chosen_setting_even_off_the_front():
    """A setting within the budget can be beaten on quality and speed by one outside it (small
    samples): the front then leaves it out, but the summary's starred row is the choice."""
    from bild_align.pipeline.tune.report import format_summary

    def point(key, quality, speedup, drop, bound):
        return {
            "key": key, "quality": quality, "speedup": speedup, "drop": drop,
            "upper_drop": bound, "large_calls_per_token": 0.5,
        }  # fmt: skip

    chosen = point("max_prob rb=0 fb=0.4 steps=7", 17.3, 1.64, 0.0, 0.0)
    front = [point("max_prob rb=4 fb=0.05 steps=10", 24.6, 1.80, -7.3, 5.0)]
    results = {
        "task": "t", "split": "validation", "examples": 24, "metric": "bleu",
        "budget": {"words": "drop <= 1 points", "confidence": 0.95},
        "front": front, "chosen": chosen,
    }  # fmt: skip
    lines = format_summary(results).splitlines()
    starred = [line for line in lines if line.startswith(chosen["key"] + " *")]
    assert len(starred) == 1 and "1.64x" in starred[0]
    keys = [line.split("  ")[0].rstrip(" *") for line in lines[2:4]]
    assert keys == [chosen["key"], front[0]["key"]]  # ordered by speedup


def test_another_budget_judges_the_kept_decodings_without_decoding(
    byte_pair_dirs, task, tmp_path, monkeypatch, capsys
):
    """A new-user finding: a rerun with another --max-drop (or --bootstrap, --timing-rows)
    was refused as "other settings" mid-run, and after a finished run decoded everything
    again. Budgets change no decoding."""
    output = tmp_path / "tune.json"
    argv = _argv(byte_pair_dirs, task, output, "--max-drop", "100", "--refine", "0")
    assert main(argv) == 0
    first = json.loads(output.read_text())
    from bild_align.runs.records import PartialLog

    decoded = []  # a fresh decoding is appended to the log; a kept one is not
    real = PartialLog.append
    monkeypatch.setattr(PartialLog, "append", lambda self, r: decoded.append(r) or real(self, r))
    again = [*argv[:-4], "--max-drop", "0", "--bootstrap", "200", "--refine", "0"]
    code = main(again)
    assert code in (0, 2)  # a zero budget may be unmeetable; either way it was judged
    out = capsys.readouterr().out
    assert f"resuming: {len(first['settings'])} decodings already done" in out
    assert decoded == []
    assert json.loads(output.read_text())["budget"]["max_drop"] == 0


def test_other_decoding_settings_are_refused_by_name(byte_pair_dirs, task, tmp_path, capsys):
    output = tmp_path / "tune.json"
    assert main(_argv(byte_pair_dirs, task, output, "--max-drop", "100", "--refine", "0")) == 0
    changed = _argv(byte_pair_dirs, task, output, "--max-drop", "100", "--refine", "0",
                    "--max-new-tokens", "5")  # fmt: skip
    assert main(changed) == 2
    assert "with other settings (max_new_tokens" in capsys.readouterr().err


@pytest.mark.parametrize("rows", ["1", "2"])
def test_too_few_rows_to_bound_a_drop_are_refused(byte_pair_dirs, task, tmp_path, capsys, rows):
    argv = _argv(byte_pair_dirs, task, tmp_path / "t.json", "--max-samples", rows)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs at least 10 rows" in err and err.count("bild-align: error:") == 1


def test_save_into_a_folder_that_cannot_be_written_is_refused_before_work(
    byte_pair_dirs, task, tmp_path, capsys, monkeypatch
):
    """A new-user finding: the whole tune ran, then --save failed with a raw OS error."""
    import os
    import shutil

    import bild_align.runs.files as io_utils

    small = shutil.copytree(byte_pair_dirs[0], tmp_path / "small")
    real_access = os.access  # (root may write anywhere: the folder is made read-only here)
    monkeypatch.setattr(
        io_utils.os, "access", lambda path, mode: Path(path) != small and real_access(path, mode)
    )
    argv = _argv(byte_pair_dirs, task, tmp_path / "t.json", "--save")
    argv[argv.index("--small") + 1] = str(small)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--save (the small model's folder)" in err and "permission denied" in err
    assert err.count("bild-align: error:") == 1 and not (tmp_path / "t.json.partial.jsonl").exists()


def test_the_measured_choice_prefers_the_exact_mode_on_a_tie():
    from bild_align.pipeline.tune.report import measured_choice

    def point(key, rb, measured, within=True):
        return {"key": key, "method": "bild", "rb": rb, "within_budget": within,
                "measured_speedup": measured}  # fmt: skip

    lossy, exact = point("lossy", 1.0, 1.70), point("exact", 0.0, 1.68)
    assert measured_choice([lossy, exact]) is exact  # within 3%: no quality risk wins
    faster = point("lossy", 1.0, 1.90)
    assert measured_choice([faster, exact]) is faster
    assert measured_choice([point("x", 1.0, 2.5, within=False), exact]) is exact
    assert measured_choice([{"key": "large", "method": "large", "within_budget": True}]) is None
