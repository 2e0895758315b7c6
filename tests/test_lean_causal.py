"""The lean decoder-only step against transformers' forward, and decoder-only batches against
each row decoded alone."""

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from bild_align import autoregressive_generate, bild_generate, speculative_generate
from bild_align.core.engines import lean
from bild_align.core.engines.lean_causal import LeanCausalDecoder, supports
from bild_align.models.toy import deepen_llama, random_llama
from bild_align.testing.helpers import padded_batch

MAX_NEW = 16
SHAPE = dict(
    vocab_size=100,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention
    max_position_embeddings=256,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=0,
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
FAMILIES = {
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**SHAPE)),
    "llama3-rope": lambda: LlamaForCausalLM(LlamaConfig(**SHAPE, rope_parameters=LLAMA3_ROPE)),
    "mistral-window": lambda: MistralForCausalLM(MistralConfig(**SHAPE, sliding_window=5)),
    # sliding windows on the upper layers only, q/k/v biases
    "qwen2-window": lambda: Qwen2ForCausalLM(
        Qwen2Config(**SHAPE, use_sliding_window=True, sliding_window=4, max_window_layers=1)
    ),
    # per-head query/key norms, a head size that is not hidden/heads
    "qwen3": lambda: Qwen3ForCausalLM(Qwen3Config(**SHAPE, head_dim=24)),
}


def _model(family, seed):
    torch.manual_seed(seed)
    model = FAMILIES[family]().eval()
    with torch.no_grad():  # biases are zero at initialisation: make them count
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lean_causal_step_equals_transformers_forward(family):
    model = _model(family, seed=1)
    assert supports(model)
    ids = torch.randint(2, 100, (3, 14), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = model(ids).logits
        decoder = LeanCausalDecoder(model, ids, None, capacity=16)
        pieces = [
            decoder.step(ids[:, :6], 0),  # a prompt
            decoder.step(ids[:, 6:7], 6),  # one token at one position for all rows
            decoder.step(ids[:, 7:14], torch.tensor([7, 7, 7])),  # per-row starts
        ]
        torch.testing.assert_close(torch.cat(pieces, 1), expected, atol=1e-4, rtol=1e-4)
        # a rollback in row 1 only, past the sliding window: re-feed from position 3
        other = ids[1:2, 3:10].flip(-1)
        rolled = decoder.step(other, torch.tensor([3]), rows=torch.tensor([1]))
        changed = ids[1:2, :10].clone()
        changed[0, 3:10] = other[0]
        torch.testing.assert_close(rolled, model(changed).logits[:, 3:10], atol=1e-4, rtol=1e-4)
        # the other rows did not notice: one more token each, at one position (the window as
        # a slice of the keys, no mask)
        following = torch.randint(2, 100, (3, 1))
        fresh = LeanCausalDecoder(model, ids, None, capacity=16)
        fresh.step(ids, 0)
        last = fresh.step(following, 14)[:, 0]
        reference = model(torch.cat((ids, following), 1)).logits[:, -1]
        torch.testing.assert_close(last, reference, atol=1e-4, rtol=1e-4)


def test_lean_causal_step_keeps_the_output_layer_where_asked_and_refuses_overflow():
    model = _model("qwen3", seed=3)
    ids = torch.randint(2, 100, (2, 5))
    with torch.inference_mode():
        full = LeanCausalDecoder(model, ids, None, capacity=8).step(ids, 0)
        last_two = LeanCausalDecoder(model, ids, None, capacity=8).step(ids, 0, keep=2)
        marked = torch.tensor([[0, 0, 1, 0, 1], [1, 0, 0, 0, 0]], dtype=bool)
        picked = LeanCausalDecoder(model, ids, None, capacity=8).step(ids, 0, keep=marked)
        torch.testing.assert_close(last_two, full[:, 3:])
        torch.testing.assert_close(picked, full[marked])
        with pytest.raises(ValueError, match="holds 8 tokens"):
            LeanCausalDecoder(model, ids, None, capacity=8).step(ids, 4)


def test_lean_causal_step_in_bfloat16_stays_close_to_transformers():
    model = _model("llama", seed=4).to(torch.bfloat16)
    ids = torch.randint(2, 100, (2, 9))
    with torch.inference_mode():
        expected = model(ids).logits.float()
        got = LeanCausalDecoder(model, ids, None, capacity=9).step(ids, 0).float()
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


def test_only_covered_decoder_only_models_run_lean():
    assert not supports(_model("llama", seed=0).train())
    dynamic = LlamaConfig(**SHAPE, rope_parameters={"rope_type": "dynamic", "factor": 2.0})
    assert not supports(LlamaForCausalLM(dynamic).eval())  # angles depend on the length
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50)).eval()
    assert not supports(gpt2) and not lean.supports(gpt2)
    assert lean.supports(_model("mistral-window", seed=0))


# --- decoder-only batches ---------------------------------------------------------------------


def _left_padded(seed, rows=5, longest=8, vocab_size=96):
    return padded_batch(seed, rows=rows, vocab_size=vocab_size, longest=longest, left=True)


def _prompt(ids, mask, index):
    return ids[index][mask[index] > 0][None]


def _pair(seed, window=None, kv_heads=None, eps=0.3):
    small = random_llama(
        vocab_size=96,
        hidden_size=48,
        num_layers=1,
        confidence=6.0,
        seed=seed,
        sliding_window=window,
        kv_heads=kv_heads,
    )
    return small, deepen_llama(small, extra_layers=2, eps=eps, seed=seed + 1)


@pytest.mark.parametrize("seed, window, kv_heads", [(0, None, None), (1, 3, None), (2, None, 2)])
def test_decoder_only_batches_in_exact_modes_equal_each_rows_large_greedy(seed, window, kv_heads):
    small, large = _pair(seed, window, kv_heads)
    ids, mask = _left_padded(seed)
    runs = {
        "autoregressive": autoregressive_generate(large, ids, mask, max_new_tokens=MAX_NEW),
        "rb=0": bild_generate(
            small, large, ids, mask, rollback_threshold=0.0, max_new_tokens=MAX_NEW
        ),
        "speculative": speculative_generate(small, large, ids, mask, max_new_tokens=MAX_NEW),
        "rb=0 shared checks": bild_generate(
            small,
            large,
            ids,
            mask,
            rollback_threshold=0.0,
            shared_checks=True,
            max_new_tokens=MAX_NEW,
        ),  # fmt: skip
    }
    width = ids.shape[1]
    for name, out in runs.items():
        for index in range(ids.shape[0]):
            prompt = _prompt(ids, mask, index)
            expected = large.generate(
                prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                max_new_tokens=MAX_NEW,
            )[0, prompt.shape[1] :].tolist()  # fmt: skip
            row = out.sequences[index].tolist()
            assert row[:width] == ids[index].tolist(), (name, index)  # the prompt as given
            assert row[width : width + len(expected)] == expected, (name, index)
            assert all(token == 0 for token in row[width + len(expected) :]), (name, index)
    assert runs["rb=0"].stats.large_calls < runs["autoregressive"].stats.large_calls


@pytest.mark.parametrize("seed, window", [(3, None), (4, 3)])
@pytest.mark.parametrize("rb, fb", [(2.0, 0.6), (1.0, 0.9)])
def test_decoder_only_batched_bild_makes_each_rows_own_decisions(seed, window, rb, fb):
    small, large = _pair(seed, window)
    ids, mask = _left_padded(seed, rows=6)
    policy = dict(rollback_threshold=rb, fallback_threshold=fb, max_new_tokens=MAX_NEW)
    batch = bild_generate(small, large, ids, mask, **policy)
    width = ids.shape[1]
    for index in range(ids.shape[0]):
        prompt = _prompt(ids, mask, index)
        alone = bild_generate(small, large, prompt, engine="transformers", **policy)
        new_tokens = alone.sequences[0, prompt.shape[1] :].tolist()
        assert batch.sequences[index, width : width + len(new_tokens)].tolist() == new_tokens
        assert batch.row_stats[index] == alone.stats
        assert batch.from_small[index] == alone.from_small[0]
    assert batch.stats.rollbacks > 0 and batch.stats.small_accepted > 0


def test_prompts_of_very_different_lengths_share_a_batch():
    """A row's first check feeds the large model its whole prompt with its drafts, padded
    beside rows far along: the static cache has room for that (a bug the eval of a causal
    pair found: a 13-token prompt beside a 61-token one overflowed it)."""
    from transformers import ByT5Tokenizer

    from bild_align.testing.helpers import byte_level_llama

    small = byte_level_llama(num_layers=1, hidden_size=32, seed=3)
    large = deepen_llama(small, extra_layers=2, eps=0.05, seed=4)
    tokenizer = ByT5Tokenizer(padding_side="left")
    texts = ["Haus Haus 0\n", "und und hier gross hier das hier ist die die schlaeft alt 1\n",
             "schlaeft ist gross gross 2\n"]  # fmt: skip
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    out = bild_generate(small, large, batch.input_ids, batch.attention_mask,
                        rollback_threshold=0.0, max_new_tokens=10)  # fmt: skip
    width = batch.input_ids.shape[1]
    for index, text in enumerate(texts):
        prompt = tokenizer(text, return_tensors="pt").input_ids
        expected = large.generate(prompt, do_sample=False, max_new_tokens=10)[0, prompt.shape[1] :]
        assert out.sequences[index, width : width + len(expected)].tolist() == expected.tolist()


@pytest.mark.parametrize("speculative", [False, True])
def test_sampled_decoder_only_batches_make_each_rows_own_draws(speculative):
    small, large = _pair(6, window=3)
    ids, mask = _left_padded(6, rows=5)
    policy = dict(do_sample=True, seed=11, temperature=0.8, max_new_tokens=MAX_NEW)
    if speculative:
        batch = speculative_generate(small, large, ids, mask, gamma=3, **policy)
    else:
        batch = bild_generate(small, large, ids, mask, rollback_threshold=1.5, **policy)
    width = ids.shape[1]
    for index in range(ids.shape[0]):
        prompt = _prompt(ids, mask, index)
        row_policy = policy | {"seed": 11 + index, "engine": "transformers"}
        if speculative:
            alone = speculative_generate(small, large, prompt, gamma=3, **row_policy)
        else:
            alone = bild_generate(small, large, prompt, rollback_threshold=1.5, **row_policy)
        new_tokens = alone.sequences[0, prompt.shape[1] :].tolist()
        assert batch.sequences[index, width : width + len(new_tokens)].tolist() == new_tokens
        assert batch.row_stats[index] == alone.stats
    assert batch.stats.small_accepted > 0 and batch.stats.rollbacks > 0


def test_one_decoder_only_row_on_the_lean_engine_equals_the_transformers_engine():
    small, large = _pair(5, window=4, kv_heads=2)
    ids, mask = _left_padded(5, rows=4)
    for index in range(4):
        prompt = _prompt(ids, mask, index)
        policy = dict(rollback_threshold=1.5, fallback_threshold=0.7, max_new_tokens=MAX_NEW)
        fast = bild_generate(small, large, prompt, **policy)
        reference = bild_generate(small, large, prompt, engine="transformers", **policy)
        assert fast.sequences.tolist() == reference.sequences.tolist()
        assert fast.stats == reference.stats


def test_models_split_across_devices_keep_transformers_forward():
    """A `device_map` split moves weights in hooks a lean step never calls."""
    model = _model("llama", seed=0)
    model.hf_device_map = {"model": 0, "lm_head": "cpu"}
    assert not lean.supports(model)
    model.hf_device_map = {"": "cpu"}
    assert lean.supports(model)
    offloaded = _model("qwen3", seed=0)
    offloaded.hf_device_map = {"model": "disk"}
    assert not lean.supports(offloaded)
