"""Saved policies and fallback heads follow the models' weights: a copy of a folder keeps
them, a policy or head made for another model is refused naming what it was made for, and a
session that does not need a head is never stopped by one."""

import shutil

import pytest
import torch
from transformers import AutoTokenizer

from bild_align.cli import main
from bild_align.configs import ChatConfig, ChatSettings
from bild_align.core.fallback_head import FallbackHead
from bild_align.core.policies import BiLDPolicy
from bild_align.errors import UserError
from bild_align.models.fallback_heads import save_head
from bild_align.models.loading import model_revision
from bild_align.models.saved_policy import load_policy, save_policy, saved_policy_for
from bild_align.testing.helpers import write_pairs


def _cp_r(source, target):
    """A copy as `cp -r` makes it: the content, with new modification times."""
    return shutil.copytree(source, target, copy_function=shutil.copyfile)


def _head(width: int = 32) -> FallbackHead:
    generator = torch.Generator().manual_seed(0)
    return FallbackHead(
        {"mean": torch.zeros(width + 2), "std": torch.ones(width + 2),
         "w1": torch.randn(16, width + 2, generator=generator), "b1": torch.zeros(16),
         "w2": torch.randn(1, 16, generator=generator), "b2": torch.zeros(1)}
    )  # fmt: skip


def _save(small, large, rule="max_prob"):
    pair = {
        "large": str(large), "large_revision": model_revision(None, str(large)),
        "small": str(small), "small_revision": model_revision(None, str(small)),
        "vocab_size": len(AutoTokenizer.from_pretrained(large)),
    }  # fmt: skip
    head = _head() if rule == "learned" else None
    policy = BiLDPolicy(0.25, 3.5, 7, rule, fallback_head=head)
    save_policy(small, policy, pair=pair, tuned={"task": "t"})
    return pair


@pytest.fixture
def pair(byte_pair_dirs, tmp_path):
    return _cp_r(byte_pair_dirs[0], tmp_path / "small"), _cp_r(byte_pair_dirs[1], tmp_path / "L")


def test_copies_of_both_folders_keep_the_policy_and_head(pair, tmp_path):
    small, large = pair
    save_head(small, _head(), small_revision=model_revision(None, str(small)), vocab_size=384,
              report={})  # fmt: skip
    saved = _save(small, large, rule="learned")
    small_copy, large_copy = _cp_r(small, tmp_path / "s2"), _cp_r(large, tmp_path / "L2")
    policy, _ = saved_policy_for(small_copy, model_revision(None, str(large_copy)), 384)
    assert policy.fallback_rule == "learned" and policy.fallback_head is not None
    assert model_revision(None, str(large_copy)) == saved["large_revision"]


@pytest.mark.parametrize("rule", ["max_prob", "learned"])
def test_a_policy_copied_from_another_small_models_folder_is_refused(pair, tmp_path, rule):
    small, large = pair
    _save(small, large, rule=rule)
    other = _cp_r(large, tmp_path / "other_small")  # another model, the same vocabulary
    save_head(other, _head(), small_revision=model_revision(None, str(other)), vocab_size=384,
              report={})  # a valid head of its own  # fmt: skip
    shutil.copy(small / "bild_policy.json", other / "bild_policy.json")
    with pytest.raises(UserError, match="tuned for another small model") as refused:
        saved_policy_for(other, model_revision(None, str(large)), 384)
    assert str(small) in str(refused.value) and "fallback head" not in str(refused.value)
    with pytest.raises(UserError, match="tuned for another small model"):
        load_policy(other)


def test_a_saved_learned_policy_without_its_head_says_the_policy_asked(pair):
    small, large = pair
    _save(small, large, rule="learned")
    with pytest.raises(UserError) as refused:
        load_policy(small)
    message = str(refused.value)
    assert "tuned policy" in message and "uses the learned fallback rule" in message
    assert "--fallback learned" not in message


def test_chat_with_another_rule_is_not_stopped_by_a_stale_head(pair, capsys):
    from bild_align.pipeline.chat.command import run_chat

    small, large = pair
    save_head(small, _head(), small_revision="local:someoneelse", vocab_size=384, report={})
    settings = ChatSettings(
        max_new_tokens=4, rollback_threshold=2.0, fallback_threshold=0.5, fallback_rule="max_prob"
    )
    given = {"rollback_threshold", "fallback_threshold", "fallback_rule", "max_new_tokens"}
    run_chat(ChatConfig(small=str(small), large=str(large)), settings, given, ["das Haus"])
    captured = capsys.readouterr()
    assert "/fallback learned is unavailable" in captured.err
    assert "bild" in captured.out and "tokens" in captured.out


def test_chat_refuses_a_max_that_would_run_for_minutes(pair, capsys):
    from bild_align.pipeline.chat.command import run_chat

    small, large = pair
    settings = ChatSettings(max_new_tokens=4, rollback_threshold=2.0)
    given = {"rollback_threshold", "max_new_tokens"}
    run_chat(ChatConfig(small=str(small), large=str(large)), settings, given,
             lines=["/max 100000", "/settings"])  # fmt: skip
    out = capsys.readouterr().out
    assert "/max needs one integer: from 1 to 4096" in out and "max=4" in out


def test_eval_copies_of_a_tuned_folder_use_its_policy(pair, tmp_path, capsys):
    small, large = pair
    _save(small, large)
    task = write_pairs(tmp_path / "pairs.jsonl", 3, seed=2)
    small_copy, large_copy = _cp_r(small, tmp_path / "s2"), _cp_r(large, tmp_path / "L2")
    code = main(
        ["eval", "--small", str(small_copy), "--large", str(large_copy), "--task", str(task),
         "--source-column", "de", "--max-new-tokens", "4", "--baselines", "large",
         "--output", str(tmp_path / "e.json")]
    )  # fmt: skip
    assert code == 0 and "using the tuned policy" in capsys.readouterr().err
