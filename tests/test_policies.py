"""Each rule of the decoder, proven on scripted models whose distributions the test chooses."""

import pytest
import torch

from bild_align import bild_generate
from bild_align.core.policies import falls_back, rollback_index
from bild_align.testing.scripted import EOS, START, ScriptedSeq2Seq, large_greedy, next_token

INPUT = torch.tensor([[5, 6, 7, EOS]])


def confident(prefix):
    return next_token(prefix), 0.9


def with_overrides(overrides, default=confident):
    """A script that follows `default` except at the given prefix lengths."""

    def script(prefix):
        return overrides.get(len(prefix), default(prefix))

    return script


def run(small_script, large_script=confident, **settings):
    small, large = ScriptedSeq2Seq(small_script), ScriptedSeq2Seq(large_script)
    out = bild_generate(small, large, INPUT, **settings)
    return out, small, large


def assert_consistent(stats, out):
    assert stats.generated == len(out.from_small[0]) == out.sequences.shape[1] - 1
    assert stats.generated == stats.small_accepted + stats.large_tokens
    assert stats.small_accepted == sum(out.from_small[0])


def test_fallback_policy_boundary():
    assert falls_back(0.59, 0.6)
    assert not falls_back(0.6, 0.6)
    assert not falls_back(0.61, 0.6)
    assert not falls_back(0.0, 0.0)
    assert falls_back(1.0, 1.01)


def test_fallback_fires_below_threshold_only():
    # The small model is unsure (0.55) at prefix length 4, sure (0.65) at length 6.
    script = with_overrides({4: (next_token((0,)), 0.55), 6: (next_token((0,)), 0.65)})
    out, small, large = run(script, fallback_threshold=0.6, max_new_tokens=8, max_small_steps=10)
    assert out.stats.fallbacks == 1
    # At length 6 the small model was confident (0.65 >= 0.6) so its token (which the large
    # model may reject) was drafted, never skipped for being unsure.
    out_low, _, _ = run(script, fallback_threshold=0.5, max_new_tokens=8)
    assert out_low.stats.fallbacks == 0
    out_high, _, _ = run(script, fallback_threshold=0.7, max_new_tokens=8)
    assert out_high.stats.fallbacks == 2
    for result in (out, out_low, out_high):
        assert_consistent(result.stats, result)


def test_fallback_hands_over_and_small_token_is_discarded():
    # Unsure at prefix length 3: its proposal (token 9) must not appear; the large one decides.
    script = with_overrides({3: (9, 0.2)})
    out, small, large = run(script, fallback_threshold=0.6, max_new_tokens=6, rollback_threshold=2)
    assert out.sequences[0].tolist() == large_greedy(confident, 6)
    assert out.from_small[0] == [True, True, False, True, True, True]
    # small drafts t1, t2 and falls back; large sees [start, t1, t2] and appends t3; small
    # drafts t4..t6 up to the limit; large checks that tail [t3..t6].
    assert large.calls == [3, 4]
    assert out.stats.small_steps == 6 and out.stats.large_calls == 2


def test_max_small_steps_cap_and_exact_counts():
    out, small, large = run(confident, max_small_steps=4, max_new_tokens=23)
    assert out.sequences[0].tolist() == large_greedy(confident, 23)
    stats = out.stats
    # 4 rounds of (4 drafts + 1 large token), then 3 drafts checked at the limit.
    assert (stats.large_calls, stats.small_steps, stats.small_accepted) == (5, 19, 19)
    assert (stats.large_tokens, stats.fallbacks, stats.rollbacks, stats.generated) == (4, 0, 0, 23)
    # Caches are reused: every call feeds only what that model has not seen.
    assert large.calls == [5, 5, 5, 5, 4]
    assert small.calls == [1, 1, 1, 1] + [2, 1, 1, 1] * 3 + [2, 1, 1]
    assert small.encoder_runs == large.encoder_runs == 1
    assert stats.large_calls_per_token == pytest.approx(5 / 23)
    assert stats.accepted_per_large_call == pytest.approx(19 / 5)
    assert_consistent(stats, out)


def test_rollback_index_picks_first_rejected_position():
    drafted = [10, 11, 12, 13]
    argmax = [10, 11, 40, 41]
    nll = [0.1, 3.0, 3.0, 9.0]
    # index 1 exceeds the threshold but the large model agrees there: not a rollback.
    assert rollback_index(drafted, nll, argmax, 2.0) == 2
    assert rollback_index(drafted, nll, argmax, 5.0) == 3
    assert rollback_index(drafted, nll, argmax, 10.0) is None
    assert rollback_index(drafted, [0.0, 0.0, 0.01, 0.0], argmax, 0.0) == 2
    # The original looks at index 1 only, sees agreement, and keeps everything.
    assert rollback_index(drafted, nll, argmax, 2.0, reference_compat=True) is None
    assert rollback_index(drafted, [0.1, 0.1, 3.0, 9.0], argmax, 2.0, reference_compat=True) == 2


def test_rollback_replaces_first_bad_draft_and_crops_caches():
    # The small model drafts a wrong token (17) at prefix length 4 (output position 4).
    script = with_overrides({4: (17, 0.9)})
    out, small, large = run(script, rollback_threshold=2.0, max_small_steps=5, max_new_tokens=12)
    assert out.sequences[0].tolist() == large_greedy(confident, 12)
    stats = out.stats
    assert stats.rollbacks == 1
    # drafts at positions 1..5: 1..3 accepted, 4 rejected, 5 discarded with it.
    assert stats.rolled_back == 2 and stats.small_accepted >= 3
    # Both caches were cropped to [start, t1, t2, t3]: after the rollback the small model is
    # fed only the correction t4, and the large model's next check feeds t4 and 5 new drafts.
    assert large.calls == [6, 6, 3]
    assert small.calls[5] == 1 and len(small.calls) == 12
    assert_consistent(stats, out)


def test_rollback_skips_over_agreeing_high_loss_draft():
    # Position 3: the large model is unsure but still prefers the draft (nll ~ 3 > rb = 2);
    # position 5: the small model drafts a wrong token. Our rule rolls back at 5.
    large_script = with_overrides({3: (next_token((0, 0, 0)), 0.05)})

    def small_script(prefix):
        if len(prefix) == 3:
            return large_script(prefix)[0], 0.9
        if len(prefix) == 5:
            return 17, 0.9
        return confident(prefix)

    out, _, _ = run(small_script, large_script, rollback_threshold=2.0, max_new_tokens=8)
    assert out.stats.rollbacks == 1
    assert out.sequences[0].tolist() == large_greedy(large_script, 8)
    compat, _, _ = run(
        small_script, large_script, rollback_threshold=2.0, max_new_tokens=8, reference_compat=True
    )
    # The original stops looking at position 3 and keeps the wrong token 17.
    assert compat.stats.rollbacks == 0
    assert compat.sequences[0, 5].item() == 17


def test_small_eos_is_verified_by_large():
    # The small model wants to stop early (EOS at length 4), the large one disagrees.
    script = with_overrides({4: (EOS, 0.9)})
    out, _, large = run(script, rollback_threshold=2.0, max_new_tokens=10)
    assert out.sequences[0].tolist() == large_greedy(confident, 10)
    assert EOS not in out.sequences[0].tolist()
    assert out.stats.rollbacks == 1
    compat, _, _ = run(script, rollback_threshold=2.0, max_new_tokens=10, reference_compat=True)
    assert compat.sequences[0].tolist()[-1] == EOS and compat.sequences.shape[1] == 5
    assert compat.stats.rollbacks == 0


def test_small_eos_accepted_when_large_agrees():
    both = with_overrides({5: (EOS, 0.9)})
    out, _, large = run(both, both, rollback_threshold=2.0, max_new_tokens=10)
    assert out.sequences[0].tolist() == large_greedy(both, 10)
    assert out.sequences[0].tolist()[-1] == EOS
    assert out.from_small[0][-1] is True
    # one check of the whole drafted output, EOS included; nothing after it.
    assert large.calls == [6]


def test_length_limit_tail_is_verified():
    script = with_overrides({6: (17, 0.9)})  # a bad draft at the last position
    out, _, _ = run(script, rollback_threshold=2.0, max_new_tokens=6)
    assert out.sequences[0].tolist() == large_greedy(confident, 6)
    compat, _, _ = run(script, rollback_threshold=2.0, max_new_tokens=6, reference_compat=True)
    assert compat.sequences[0].tolist()[-1] == 17
    assert_consistent(out.stats, out)
    assert_consistent(compat.stats, compat)


def test_rollback_to_eos_stops_by_default_but_not_in_compat():
    # The large model wants EOS at length 4; the small model drafts something else there.
    large_script = with_overrides({4: (EOS, 0.9)})
    settings = dict(rollback_threshold=2.0, max_new_tokens=20, max_small_steps=5)
    out, _, _ = run(confident, large_script, **settings)
    assert out.sequences[0].tolist() == large_greedy(large_script, 20)
    assert out.sequences[0].tolist()[-1] == EOS and out.sequences.shape[1] == 5
    compat, _, _ = run(confident, large_script, reference_compat=True, **settings)
    tokens = compat.sequences[0].tolist()
    assert tokens[4] == EOS and len(tokens) > 5  # the original decodes on past the EOS


def test_compat_matches_default_when_no_difference_applies():
    out, _, _ = run(confident, rollback_threshold=2.0, max_new_tokens=15)
    compat, _, _ = run(confident, rollback_threshold=2.0, max_new_tokens=15, reference_compat=True)
    assert out.sequences.tolist() == compat.sequences.tolist()


def test_start_token_and_single_token_limit():
    out, small, large = run(confident, max_new_tokens=1)
    assert out.sequences[0].tolist() == [START, next_token((START,))]
    assert small.calls == [1] and large.calls == [2]
    compat, small, large = run(confident, max_new_tokens=1, reference_compat=True)
    assert compat.sequences[0].tolist() == [START, next_token((START,))]
    assert small.calls == [] and large.calls == [1]  # the original starts with the large model
