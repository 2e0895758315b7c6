"""The engine: the lean T5 step against transformers' forward, and batches against rows."""

import pytest
import torch

from bild_align import autoregressive_generate, bild_generate, speculative_generate
from bild_align.core.engines.lean_t5 import LeanT5Decoder, supports
from bild_align.models.toy import deepen, random_llama, random_t5
from bild_align.testing.helpers import padded_batch

MAX_NEW = 20


def _padded_batch(seed, rows=5, vocab_size=128, longest=9):
    return padded_batch(seed, rows=rows, vocab_size=vocab_size, longest=longest)


def _pair(seed, gated=False, eps=0.1):
    small = random_t5(confidence=6.0, gated=gated, seed=seed)
    return small, deepen(small, extra_layers=4, eps=eps, head_noise=0.5, seed=seed + 1)


def _row(ids, mask, index):
    length = int(mask[index].sum())
    return ids[index : index + 1, :length]


# --- the lean step -----------------------------------------------------------------------------


@pytest.mark.parametrize("gated", [False, True])
def test_lean_step_equals_transformers_forward(gated):
    model = random_t5(gated=gated, num_layers=3, seed=4)
    ids, mask = _padded_batch(seed=4, rows=3)
    decoder_ids = torch.randint(2, 128, (3, 12))
    decoder_ids[:, 0] = 0
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        lean = LeanT5Decoder(model, ids, mask, capacity=16)
        pieces = [
            lean.step(decoder_ids[:, :5], 0),  # a prompt-like chunk from position 0
            lean.step(decoder_ids[:, 5:6], 5),  # a single token at one position for all
            lean.step(decoder_ids[:, 6:12], torch.tensor([6, 6, 6])),  # per-row starts
        ]
        torch.testing.assert_close(torch.cat(pieces, 1), expected, atol=1e-4, rtol=1e-4)
        # a rollback in row 1 only: re-feed from position 3 with other tokens, row 1 alone
        other = decoder_ids[1:2, 3:8].flip(-1)
        rolled = lean.step(other, torch.tensor([3]), rows=torch.tensor([1]))
        decoder_ids[1, 3:8] = other[0]
        again = model(
            input_ids=ids[1:2], attention_mask=mask[1:2], decoder_input_ids=decoder_ids[1:2, :8]
        ).logits
        torch.testing.assert_close(rolled, again[:, 3:8], atol=1e-4, rtol=1e-4)
        # the other rows did not notice: row 2 continues where it was
        tail = lean.step(decoder_ids[2:3, 11:12], torch.tensor([11]), rows=torch.tensor([2]))
        torch.testing.assert_close(tail[0, 0], expected[2, 11], atol=1e-4, rtol=1e-4)


def test_lean_step_computes_the_output_layer_only_where_asked():
    model = random_t5(num_layers=2, seed=6)
    ids, mask = _padded_batch(seed=6, rows=3)
    decoder_ids = torch.randint(2, 128, (3, 5))
    with torch.inference_mode():
        full = LeanT5Decoder(model, ids, mask, capacity=8).step(decoder_ids, 0)
        last_two = LeanT5Decoder(model, ids, mask, capacity=8).step(decoder_ids, 0, keep=2)
        marked = torch.tensor([[0, 0, 0, 0, 1], [0, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=bool)
        picked = LeanT5Decoder(model, ids, mask, capacity=8).step(decoder_ids, 0, keep=marked)
    torch.testing.assert_close(last_two, full[:, 3:])
    torch.testing.assert_close(picked, full[marked])


def test_lean_step_in_bfloat16_stays_close_to_transformers():
    model = random_t5(num_layers=2, seed=5).to(torch.bfloat16)
    ids, mask = _padded_batch(seed=5, rows=2)
    decoder_ids = torch.randint(2, 128, (2, 6))
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        lean = LeanT5Decoder(model, ids, mask, capacity=8).step(decoder_ids, 0)
    scale = expected.float().abs().max()
    assert (lean.float() - expected.float()).abs().max() < 0.05 * scale


def test_lean_step_refuses_to_write_past_its_capacity():
    model = random_t5(seed=6)
    lean = LeanT5Decoder(model, torch.tensor([[5, 6]]), None, capacity=4)
    with pytest.raises(ValueError, match="holds 4 tokens"):
        lean.step(torch.zeros((1, 3), dtype=torch.long), 2)


def test_only_the_t5_family_in_eval_mode_runs_lean():
    assert supports(random_t5(seed=0)) and supports(random_t5(gated=True, seed=0))
    assert not supports(random_t5(seed=0).train())
    assert not supports(random_llama(vocab_size=32, hidden_size=16, num_layers=1, seed=0))


# --- batches: each row as if alone ------------------------------------------------------------


def _assert_rows_equal_generate(out, large, ids, mask):
    pad = large.generation_config.pad_token_id
    for index in range(ids.shape[0]):
        expected = large.generate(_row(ids, mask, index), do_sample=False, max_new_tokens=MAX_NEW)
        row = out.sequences[index].tolist()
        length = expected.shape[1]
        assert row[:length] == expected[0].tolist(), index
        assert all(token == pad for token in row[length:]), index


@pytest.mark.parametrize("seed, gated, eps", [(0, False, 0.1), (1, True, 0.3), (2, False, 1.0)])
def test_batched_exact_modes_equal_each_rows_large_greedy(seed, gated, eps):
    small, large = _pair(seed, gated, eps)
    ids, mask = _padded_batch(seed)
    runs = {
        "autoregressive": autoregressive_generate(large, ids, mask, max_new_tokens=MAX_NEW),
        "rb=0": bild_generate(
            small, large, ids, mask, rollback_threshold=0.0, max_new_tokens=MAX_NEW
        ),
        "fb>1": bild_generate(
            small, large, ids, mask, fallback_threshold=1.5, max_new_tokens=MAX_NEW
        ),
        "speculative": speculative_generate(small, large, ids, mask, max_new_tokens=MAX_NEW),
    }
    for name, out in runs.items():
        assert out.sequences.shape[0] == ids.shape[0], name
        _assert_rows_equal_generate(out, large, ids, mask)
    assert runs["fb>1"].stats.small_accepted == 0
    assert runs["rb=0"].stats.large_calls < runs["autoregressive"].stats.large_calls


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("rb, fb", [(2.0, 0.6), (4.0, 0.3), (1.0, 0.9)])
def test_batched_bild_makes_each_rows_own_decisions(seed, rb, fb):
    """Row by row on transformers' forward is the reference: same tokens, same counts."""
    small, large = _pair(seed, eps=0.3)
    ids, mask = _padded_batch(seed, rows=6)
    policy = dict(rollback_threshold=rb, fallback_threshold=fb, max_new_tokens=MAX_NEW)
    batch = bild_generate(small, large, ids, mask, **policy)
    total_rollbacks = 0
    for index in range(ids.shape[0]):
        alone = bild_generate(small, large, _row(ids, mask, index), engine="transformers", **policy)
        length = alone.sequences.shape[1]
        assert batch.sequences[index, :length].tolist() == alone.sequences[0].tolist()
        assert batch.row_stats[index] == alone.stats
        assert batch.from_small[index] == alone.from_small[0]
        total_rollbacks += alone.stats.rollbacks
    assert batch.stats.rollbacks == total_rollbacks
    assert batch.stats.generated == sum(stats.generated for stats in batch.row_stats)


def test_one_row_on_the_lean_engine_equals_the_transformers_engine():
    small, large = _pair(7, gated=True, eps=0.3)
    ids, mask = _padded_batch(7, rows=4)
    for index in range(4):
        row = _row(ids, mask, index)
        lean = bild_generate(small, large, row, max_new_tokens=MAX_NEW)
        reference = bild_generate(small, large, row, max_new_tokens=MAX_NEW, engine="transformers")
        assert lean.sequences.tolist() == reference.sequences.tolist()
        assert lean.stats == reference.stats


SAMPLED = {
    "bild": lambda small, large, *args, **kw: bild_generate(
        small, large, *args, rollback_threshold=1.5, fallback_threshold=0.7, **kw
    ),
    "speculative": lambda small, large, *args, **kw: speculative_generate(
        small, large, *args, gamma=3, **kw
    ),
    "autoregressive": lambda small, large, *args, **kw: autoregressive_generate(large, *args, **kw),
}


@pytest.mark.parametrize("method", sorted(SAMPLED))
@pytest.mark.parametrize("seed, warp", [(8, {}), (9, {"temperature": 0.7, "top_k": 20})])
def test_sampled_batches_make_each_rows_own_draws(method, seed, warp):
    """Sampled, row i of a batch is the row decoded alone with seed + i: the batch runs
    together on the lean step and row by row on transformers' forward, with the same rows."""
    small, large = _pair(seed, eps=0.5)
    ids, mask = _padded_batch(seed, rows=5)
    decode = SAMPLED[method]
    policy = dict(do_sample=True, seed=seed, max_new_tokens=MAX_NEW, **warp)
    together = decode(small, large, ids, mask, **policy)
    by_rows = decode(small, large, ids, mask, engine="transformers", **policy)
    assert together.sequences.tolist() == by_rows.sequences.tolist()
    assert together.row_stats == by_rows.row_stats
    for index in range(ids.shape[0]):
        alone = decode(small, large, _row(ids, mask, index), **(policy | {"seed": seed + index}))
        length = alone.sequences.shape[1]
        assert together.sequences[index, :length].tolist() == alone.sequences[0].tolist()
        assert together.row_stats[index] == alone.stats
        assert together.from_small[index] == alone.from_small[0]
    # the draws are the rows' own: another seed gives other rows
    other = decode(small, large, ids, mask, **(policy | {"seed": seed + 100}))
    assert other.sequences.tolist() != together.sequences.tolist()
    if method == "speculative":  # the test has power: drafts were both accepted and rejected
        assert together.stats.small_accepted > 0 and together.stats.rollbacks > 0


# --- shared checks: rows kept in step ---------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 2])
def test_shared_checks_keep_the_exact_mode_exact(seed):
    small, large = _pair(seed, eps=0.3)
    ids, mask = _padded_batch(seed, rows=6)
    policy = dict(rollback_threshold=0.0, fallback_threshold=0.6, max_new_tokens=MAX_NEW)
    shared = bild_generate(small, large, ids, mask, shared_checks=True, **policy)
    _assert_rows_equal_generate(shared, large, ids, mask)
    own = bild_generate(small, large, ids, mask, **policy)
    # the option changes when rows are checked: rows pulled into a check stop drafting early
    assert shared.stats.small_steps < own.stats.small_steps


def test_shared_checks_leave_rows_in_step_alone_when_they_are_already():
    """Identical rows decide identically, so they are always in step: shared or not, each
    equals the row decoded alone."""
    small, large = _pair(5, eps=0.3)
    ids, mask = _padded_batch(5, rows=1)
    policy = dict(rollback_threshold=2.0, fallback_threshold=0.6, max_new_tokens=MAX_NEW)
    alone = bild_generate(small, large, ids, mask, **policy)
    shared = bild_generate(
        small, large, ids.repeat(3, 1), mask.repeat(3, 1), shared_checks=True, **policy
    )
    for index in range(3):
        assert shared.sequences[index].tolist() == alone.sequences[0].tolist()
        assert shared.row_stats[index] == alone.stats


def test_lean_t5_encoder_equals_transformers_encoder():
    """The lean T5 encoder (bidirectional relative positions, padding masked) gives
    transformers' encoder output, plain and gated, at every unpadded position."""
    from bild_align.core.engines.lean_t5 import encode_t5
    from bild_align.models.toy import random_t5

    for gated, seed in ((False, 0), (True, 1)):
        model = random_t5(vocab_size=100, d_model=48, num_layers=3, gated=gated, seed=seed)
        ids = torch.randint(2, 90, (3, 40), generator=torch.Generator().manual_seed(seed))
        mask = torch.ones_like(ids)
        mask[1, 30:] = 0
        mask[2, 5:] = 0
        with torch.inference_mode():
            expected = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
            hidden, _ = encode_t5(model, ids, mask)
        keep = mask.bool()
        torch.testing.assert_close(hidden[keep], expected[keep], rtol=1e-5, atol=1e-5)


def test_a_single_query_position_bias_is_aligned_off_the_cpu():
    """On the CPU a single query's relative-position bias is a view into one table (no copy);
    elsewhere CUDA's fused attention kernels read the mask in aligned blocks and a view at an
    arbitrary offset crashed them in float16 ("misaligned address", found on an H200), so there
    it is a copy, at offset 0, with the view's values."""
    model = random_t5(vocab_size=50, d_model=32, num_layers=1, seed=0)
    lean = LeanT5Decoder(model, torch.tensor([[5, 6, 1]]), None, capacity=16)
    on_cpu = lean._position_bias(5, 1, 6)
    assert on_cpu.storage_offset() == lean.capacity - 1 - 5  # a view: no copy per step
    shapes = [lean._position_bias(start, 1, start + 1).shape for start in range(lean.capacity)]
    lean.bias_reversed = lean.bias_reversed.to("meta")  # stands for an accelerator here
    for start in range(lean.capacity):  # a query at `start` sees start + 1 keys
        bias = lean._position_bias(start, 1, start + 1)
        assert bias.device.type == "meta" and bias.storage_offset() == 0
        assert bias.shape == shapes[start] == (1, lean.heads, 1, start + 1)
