"""The decoder family: decoder-only models, speculative decoding, sampling, the baseline."""

import math
import zlib

import pytest
import torch
from scipy.stats import chisquare

from bild_align import autoregressive_generate, bild_generate, speculative_generate
from bild_align.core.sampling import Sampler
from bild_align.models.toy import (
    deepen,
    deepen_llama,
    random_inputs,
    random_llama,
    random_t5,
)
from bild_align.testing.scripted import EOS, START, ScriptedSeq2Seq

# --- decoder-only models -----------------------------------------------------------------------


def _llama_pair(seed, eps, confidence=6.0):
    small = random_llama(
        vocab_size=96, hidden_size=48, num_layers=1, confidence=confidence, seed=seed
    )
    return small, deepen_llama(small, extra_layers=3, eps=eps, seed=seed + 1)


def _gpt2(seed, layers):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=96,
            n_embd=48,
            n_layer=layers,
            n_head=4,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=0,
        )
    )
    model.lm_head.weight = torch.nn.Parameter(torch.randn(96, 48) * 0.8)
    return model.eval()


@pytest.mark.parametrize("seed, eps", [(0, 0.0), (1, 0.2), (2, 1.0)])
def test_decoder_only_exact_mode_equals_large_greedy(seed, eps):
    small, large = _llama_pair(seed, eps)
    for prompt in random_inputs(4, vocab_size=96, seed=seed, max_length=12):
        expected = large.generate(prompt, do_sample=False, max_new_tokens=24)
        for fb in (0.0, 0.5, 1.5):
            out = bild_generate(
                small,
                large,
                prompt,
                rollback_threshold=0.0,
                fallback_threshold=fb,
                max_new_tokens=24,
            )
            assert out.sequences.tolist() == expected.tolist()
        assert (
            speculative_generate(
                small, large, prompt, gamma=3, max_new_tokens=24
            ).sequences.tolist()
            == expected.tolist()
        )


def test_gpt2_pair_and_left_padded_prompt():
    small, large = _gpt2(0, 1), _gpt2(1, 3)
    for prompt in random_inputs(3, vocab_size=96, seed=4, max_length=10):
        expected = large.generate(prompt, do_sample=False, max_new_tokens=16)
        out = bild_generate(small, large, prompt, rollback_threshold=0.0, max_new_tokens=16)
        assert out.sequences.tolist() == expected.tolist()
        padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), prompt], dim=1)
        mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(prompt)], dim=1)
        again = bild_generate(small, large, padded, mask, rollback_threshold=0.0, max_new_tokens=16)
        assert again.sequences[0, -16:].tolist() == expected[0, -16:].tolist()


def test_mixed_pair_is_refused():
    t5 = random_t5(vocab_size=96, d_model=32, num_layers=1)
    with pytest.raises(ValueError, match="pair two encoder-decoder models"):
        bild_generate(_gpt2(0, 1), t5, torch.tensor([[5, 6, 1]]))


# --- speculative decoding and the baseline, greedy ---------------------------------------------


@pytest.mark.parametrize("gamma", [1, 2, 5, 9])
def test_speculative_greedy_equals_large_greedy(gamma):
    small = random_t5(vocab_size=128, d_model=64, num_layers=2, confidence=8.0, seed=1)
    large = deepen(small, extra_layers=3, eps=0.05, head_noise=0.3, seed=2)
    accepted = 0
    for input_ids in random_inputs(4, vocab_size=128, seed=gamma):
        expected = large.generate(input_ids, do_sample=False, max_new_tokens=30)
        out = speculative_generate(small, large, input_ids, gamma=gamma, max_new_tokens=30)
        assert out.sequences.tolist() == expected.tolist()
        assert out.stats.fallbacks == 0
        assert out.stats.generated == out.stats.small_accepted + out.stats.large_tokens
        accepted += out.stats.small_accepted
    assert accepted > 0


def test_autoregressive_baseline_equals_generate():
    model = random_t5(vocab_size=128, d_model=64, num_layers=2, confidence=4.0, seed=3)
    for input_ids in random_inputs(3, vocab_size=128, seed=3):
        out = autoregressive_generate(model, input_ids, max_new_tokens=20)
        assert out.sequences.tolist() == model.generate(input_ids, max_new_tokens=20).tolist()
        assert out.stats.large_calls == out.stats.generated


# --- sampling ----------------------------------------------------------------------------------

VOCAB = 5  # scripted models: START=0, EOS=1, and tokens 2..4
LENGTH = 2


def _random_distribution(prefix, salt):
    # a stable hash (Python's str hash changes per process): the same distributions every run
    generator = torch.Generator().manual_seed(zlib.crc32(repr((prefix, salt)).encode()))
    logits = torch.randn(VOCAB, generator=generator) * 1.5
    logits[START] = -math.inf  # never produced
    return torch.softmax(logits, -1)


class FullDistributionModel(ScriptedSeq2Seq):
    """A scripted model whose next-token distribution is any chosen vector."""

    def __init__(self, salt):
        super().__init__(lambda prefix: (2, 0.5))
        self.salt = salt
        self.head = torch.nn.Linear(1, VOCAB, bias=False)

    def forward(self, *, decoder_input_ids, past_key_values, **_):
        cache = past_key_values.self_attention_cache
        cached = [] if cache.get_seq_length() == 0 else cache.layers[0].keys[0, 0, :, 0].tolist()
        ids = decoder_input_ids.float().view(1, 1, -1, 1)
        cache.update(ids, ids, 0)
        prefix = [int(token) for token in cached]
        rows = []
        for token in decoder_input_ids[0].tolist():
            prefix.append(token)
            rows.append(torch.log(_random_distribution(tuple(prefix), self.salt)))
        return type("Output", (), {"logits": torch.stack(rows)[None]})


def _exact_distribution(salt, sampler):
    """Probability of every output sequence when sampling from the scripted model alone."""
    outcomes = {}

    def walk(prefix, probability):
        if len(prefix) > LENGTH or (len(prefix) > 1 and prefix[-1] == EOS):
            outcomes[prefix[1:]] = probability
            return
        probs = sampler.distribution(torch.log(_random_distribution(prefix, salt)))
        for token in range(VOCAB):
            if probs[token] > 0:
                walk(prefix + (token,), probability * float(probs[token]))

    walk((START,), 1.0)
    return outcomes


def _observed(run, runs):
    counts = {}
    for seed in range(runs):
        tokens = tuple(run(seed).sequences[0, 1:].tolist())
        counts[tokens] = counts.get(tokens, 0) + 1
    return counts


def _p_value(counts, expected, runs):
    """Chi-square p-value of `counts` under `expected`; 0 if an impossible sequence occurred."""
    keys = sorted(expected)
    if not set(counts) <= set(keys):
        return 0.0
    observed = [counts.get(key, 0) for key in keys]
    total = sum(expected.values())  # 1 up to float rounding, which chisquare does not forgive
    return chisquare(observed, [expected[key] / total * runs for key in keys]).pvalue


@pytest.mark.parametrize("warp", [dict(), dict(temperature=0.7, top_k=3), dict(top_p=0.8)])
def test_speculative_sampling_follows_the_large_distribution(warp):
    small, large = FullDistributionModel("small"), FullDistributionModel("large")
    runs = 2000
    expected = _exact_distribution("large", Sampler(do_sample=True, **warp))
    input_ids = torch.tensor([[3, 4, EOS]])

    def speculative(seed):
        return speculative_generate(
            small,
            large,
            input_ids,
            gamma=2,
            max_new_tokens=LENGTH,
            do_sample=True,
            seed=seed,
            **warp,
        )

    counts = _observed(speculative, runs)
    assert set(counts) <= set(expected)  # nothing the large model could not produce
    assert _p_value(counts, expected, runs) > 1e-3
    # the test has power: the small model's own distribution is told apart
    small_counts = _observed(
        lambda seed: autoregressive_generate(
            small, input_ids, max_new_tokens=LENGTH, do_sample=True, seed=seed, **warp
        ),
        runs,
    )
    assert _p_value(small_counts, expected, runs) < 1e-6


def test_sampling_is_seeded_and_bild_samples():
    small = random_t5(vocab_size=128, d_model=64, num_layers=2, confidence=3.0, seed=5)
    large = deepen(small, extra_layers=2, eps=0.05, head_noise=0.2, seed=6)
    input_ids = random_inputs(1, vocab_size=128, seed=5)[0]
    settings = dict(do_sample=True, temperature=0.9, top_p=0.95, max_new_tokens=24)
    first = bild_generate(small, large, input_ids, seed=1, rollback_threshold=2.0, **settings)
    again = bild_generate(small, large, input_ids, seed=1, rollback_threshold=2.0, **settings)
    other = [
        bild_generate(small, large, input_ids, seed=s, **settings).sequences.tolist()
        for s in range(2, 6)
    ]
    assert first.sequences.tolist() == again.sequences.tolist()
    assert any(sequence != first.sequences.tolist() for sequence in other)
    assert first.stats.generated == first.stats.small_accepted + first.stats.large_tokens
    with pytest.raises(ValueError, match="temperature must be > 0"):
        bild_generate(small, large, input_ids, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="gamma must be a positive integer"):
        speculative_generate(small, large, input_ids, gamma=0)


def test_sampler_filters():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0])
    top_k = Sampler(do_sample=True, top_k=2, seed=0).distribution(logits)
    assert (top_k[2:] == 0).all() and top_k.sum() == pytest.approx(1.0)
    top_p = Sampler(do_sample=True, top_p=0.6, seed=0).distribution(logits)
    assert top_p[0] == pytest.approx(1.0)  # the first token alone holds >= 60%
    full = Sampler(do_sample=True, temperature=2.0, seed=0).distribution(logits)
    assert full.argmax() == 0 and (full > 0).all()


def test_a_given_policy_is_used_as_it_is():
    """`policy=` runs the policy's own mode: a SpeculativePolicy is speculative decoding (the
    same tokens and counts as speculative_generate, sampled too), and reference_compat turns
    a given BiLD policy into the original implementation's decisions."""
    from bild_align.core.policies import BiLDPolicy, SpeculativePolicy

    small = random_t5(vocab_size=128, d_model=64, num_layers=2, confidence=3.0, seed=7)
    large = deepen(small, extra_layers=2, eps=0.1, head_noise=0.3, seed=8)
    for input_ids in random_inputs(3, vocab_size=128, seed=7):
        for sampling in ({}, {"do_sample": True, "seed": 3, "temperature": 0.8}):
            given = bild_generate(
                small, large, input_ids, policy=SpeculativePolicy(max_small_steps=3), **sampling
            )
            expected = speculative_generate(small, large, input_ids, gamma=3, **sampling)
            assert given.sequences.tolist() == expected.sequences.tolist()
            assert given.stats == expected.stats
        policy = BiLDPolicy(fallback_threshold=0.5, rollback_threshold=1.0)
        compat = bild_generate(small, large, input_ids, policy=policy, reference_compat=True)
        typed = bild_generate(
            small, large, input_ids, fallback_threshold=0.5, rollback_threshold=1.0,
            reference_compat=True,
        )  # fmt: skip
        assert compat.sequences.tolist() == typed.sequences.tolist()
        assert compat.stats == typed.stats


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"fallback_threshold": -0.5}, "fallback_threshold must be a number >= 0"),
        ({"rollback_threshold": float("nan")}, "rollback_threshold must be a number >= 0"),
        ({"rollback_threshold": "2"}, "rollback_threshold must be a number >= 0"),
        ({"max_small_steps": 0}, "max_small_steps must be a positive integer"),
        ({"fallback_rule": "top1"}, "fallback_rule must be one of"),
    ],
)
def test_a_policy_refuses_bad_settings_when_made(settings, message):
    from bild_align.core.policies import BiLDPolicy

    with pytest.raises(ValueError, match=message):
        BiLDPolicy(**settings)
    assert BiLDPolicy(rollback_threshold=3).rollback_threshold == 3.0
