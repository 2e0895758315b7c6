"""The lean BART-family step (BART, mBART, Marian, Pegasus) against transformers' forward."""

import pytest
import torch

from bild_align import autoregressive_generate, bild_generate, speculative_generate
from bild_align.core.engines import lean
from bild_align.core.engines.lean_bart import LeanBartDecoder, supports
from bild_align.models.toy import BART_FAMILIES, deepen_bart, random_bart, random_t5
from bild_align.testing.helpers import padded_batch

MAX_NEW = 16
# (family, scale_embedding): Marian checkpoints scale their embeddings, BART's usually not
VARIANTS = [("bart", False), ("bart", True), ("mbart", False), ("marian", True), ("pegasus", True)]


def _row(ids, mask, index):
    return ids[index : index + 1, : int(mask[index].sum())]


def _pair(family, seed, eps=0.05):
    small = random_bart(family, scale_embedding=family in ("marian", "pegasus"), seed=seed)
    return small, deepen_bart(small, extra_layers=2, eps=eps, seed=seed + 1)


@pytest.mark.parametrize("family, scale_embedding", VARIANTS)
def test_lean_step_equals_transformers_forward(family, scale_embedding):
    model = random_bart(family, num_layers=2, scale_embedding=scale_embedding, seed=4)
    ids, mask = padded_batch(4, rows=3, vocab_size=96)
    decoder_ids = torch.randint(2, 96, (3, 12))
    decoder_ids[:, 0] = 0
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        decoder = LeanBartDecoder(model, ids, mask, capacity=16)
        pieces = [
            decoder.step(decoder_ids[:, :5], 0),  # a chunk from position 0
            decoder.step(decoder_ids[:, 5:6], 5),  # one token at one position for all
            decoder.step(decoder_ids[:, 6:12], torch.tensor([6, 6, 6])),  # per-row starts
        ]
        torch.testing.assert_close(torch.cat(pieces, 1), expected, atol=1e-4, rtol=1e-4)
        # a rollback in row 1 only: re-feed from position 3 with other tokens, row 1 alone
        other = decoder_ids[1:2, 3:8].flip(-1)
        rolled = decoder.step(other, torch.tensor([3]), rows=torch.tensor([1]))
        decoder_ids[1, 3:8] = other[0]
        again = model(
            input_ids=ids[1:2], attention_mask=mask[1:2], decoder_input_ids=decoder_ids[1:2, :8]
        ).logits
        torch.testing.assert_close(rolled, again[:, 3:8], atol=1e-4, rtol=1e-4)
        # the other rows did not notice: row 2 continues where it was
        tail = decoder.step(decoder_ids[2:3, 11:12], torch.tensor([11]), rows=torch.tensor([2]))
        torch.testing.assert_close(tail[0, 0], expected[2, 11], atol=1e-4, rtol=1e-4)
        kept = LeanBartDecoder(model, ids, mask, capacity=16).step(decoder_ids, 0, keep=2)
    assert kept.shape == (3, 2, 96)


def test_lean_step_in_bfloat16_stays_close_to_transformers():
    model = random_bart("mbart", num_layers=2, seed=5).to(torch.bfloat16)
    ids, mask = padded_batch(5, rows=2, vocab_size=96)
    decoder_ids = torch.randint(2, 96, (2, 6))
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        logits = LeanBartDecoder(model, ids, mask, capacity=8).step(decoder_ids, 0)
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), expected.float(), atol=0.1, rtol=0.05)


def test_lean_step_refuses_to_write_past_its_capacity():
    model = random_bart("bart", seed=6)
    decoder = LeanBartDecoder(model, torch.tensor([[5, 6]]), None, capacity=4)
    with pytest.raises(ValueError, match="holds 4 tokens"):
        decoder.step(torch.zeros((1, 3), dtype=torch.long), 2)


def test_a_call_past_the_position_table_says_which_limit_it_hit():
    small = random_bart("marian", eos_weight=0.0, seed=6)  # 128 positions, no early EOS
    large = deepen_bart(small, extra_layers=1, seed=7)
    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    mask = (ids > 0).long()
    # the call asks for room beyond the table (drafts past the end), yet fits: no error
    full = bild_generate(small, large, ids, mask, max_new_tokens=127)
    assert full.sequences.shape == (2, 128)
    with pytest.raises(ValueError, match="at most 128 decoder positions"):
        bild_generate(small, large, ids, mask, max_new_tokens=130)


def test_only_bart_family_generation_models_in_eval_mode_run_lean():
    for family in BART_FAMILIES:
        model = random_bart(family, seed=0)
        assert supports(model) and lean.supports(model)
        assert not supports(model.train())
    assert not supports(random_t5(seed=0))


@pytest.mark.parametrize("family", BART_FAMILIES)
def test_batched_exact_modes_equal_each_rows_large_greedy(family):
    small, large = _pair(family, seed=1)
    ids, mask = padded_batch(1, rows=5, vocab_size=96)
    runs = {
        "autoregressive": autoregressive_generate(large, ids, mask, max_new_tokens=MAX_NEW),
        "rb=0": bild_generate(
            small, large, ids, mask, rollback_threshold=0.0, max_new_tokens=MAX_NEW
        ),
        "speculative": speculative_generate(small, large, ids, mask, max_new_tokens=MAX_NEW),
    }
    for name, out in runs.items():
        for index in range(ids.shape[0]):
            expected = large.generate(
                _row(ids, mask, index), do_sample=False, num_beams=1, max_new_tokens=MAX_NEW
            )[0].tolist()
            row = out.sequences[index].tolist()
            assert row[: len(expected)] == expected, (name, index)
            assert all(token == 0 for token in row[len(expected) :]), (name, index)
    assert runs["rb=0"].stats.large_calls < runs["autoregressive"].stats.large_calls


@pytest.mark.parametrize("family", BART_FAMILIES)
@pytest.mark.parametrize("sampled", [False, True])
def test_batched_bild_makes_each_rows_own_decisions(family, sampled):
    """Row by row on transformers' forward is the reference: same tokens, same counts."""
    small, large = _pair(family, seed=3, eps=0.1)
    ids, mask = padded_batch(3, rows=6, vocab_size=96)
    policy = dict(rollback_threshold=0.5, fallback_threshold=0.4, max_new_tokens=MAX_NEW)
    if sampled:
        policy |= dict(do_sample=True, temperature=0.8, seed=5)
    batch = bild_generate(small, large, ids, mask, **policy)
    for index in range(ids.shape[0]):
        row_policy = policy | ({"seed": 5 + index} if sampled else {})
        alone = bild_generate(
            small, large, _row(ids, mask, index), engine="transformers", **row_policy
        )
        length = alone.sequences.shape[1]
        assert batch.sequences[index, :length].tolist() == alone.sequences[0].tolist()
        assert batch.row_stats[index] == alone.stats
    assert batch.stats.rollbacks > 0 and batch.stats.small_accepted > 0
