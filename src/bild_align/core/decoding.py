"""The decoder family: Big Little Decoder (BiLD), classic speculative decoding, and a plain
autoregressive baseline, greedy or sampled, for encoder-decoder and decoder-only models.

    from bild_align import bild_generate, speculative_generate, autoregressive_generate
    out = bild_generate(small, large, input_ids, fallback_threshold=0.6, rollback_threshold=2.0)
    out.sequences                    # like `generate`'s: start token (or prompt) + output
    out.stats.large_calls_per_token  # exact counts and derived rates, see `BiLDStats`
    out = speculative_generate(small, large, input_ids, gamma=4, do_sample=True, seed=0)
    out = bild_generate(small, large, batch_ids, batch_mask)   # (B, L): each row on its own
    out.row_stats[i], out.from_small[i]                        # row i's counts and sources

Token ids in, token ids and counts out: no tokenizer, no timing, no I/O. These functions turn
their arguments into a policy (`policies`: what is decided) and a sampler (`sampling`: how a
token is chosen) for the one decode loop (`loop.decode`).

- BiLD: the small model drafts until it is unsure (fallback) or has drafted `max_small_steps`
  tokens; the large model checks the drafts in one pass, replaces the first one it finds
  unlikely (rollback) or else adds a token of its own. `rollback_threshold=0` (or
  `fallback_threshold > 1`) gives exactly the large model's greedy output.
- Speculative decoding: `gamma` drafts per check; the large model accepts each with
  probability min(1, p/q) and resamples the first rejected one from max(0, p - q) (Leviathan
  et al. 2023; Chen et al. 2023): the output follows the large model's distribution exactly.
- Batches: each row makes exactly the decisions it makes alone; sampled, row i draws what it
  draws alone with seed + i.
"""

from __future__ import annotations

from dataclasses import fields

import torch
from transformers import PreTrainedModel

from bild_align.core.checks import check_count, check_pair, eos_token_ids, pad_token_id
from bild_align.core.loop import decode
from bild_align.core.policies import (
    FALLBACK_THRESHOLD,
    MAX_SMALL_STEPS,
    ROLLBACK_THRESHOLD,
    BiLDPolicy,
    ReferencePolicy,
    SpeculativePolicy,
)
from bild_align.core.sampling import Sampler
from bild_align.core.stats import BiLDOutput, BiLDStats

__all__ = [
    "BiLDOutput",
    "BiLDStats",
    "autoregressive_generate",
    "bild_generate",
    "check_pair",
    "eos_token_ids",
    "pad_token_id",
    "speculative_generate",
]


def bild_generate(
    small: PreTrainedModel,
    large: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    *,
    fallback_threshold: float = FALLBACK_THRESHOLD,
    rollback_threshold: float = ROLLBACK_THRESHOLD,
    max_small_steps: int = MAX_SMALL_STEPS,
    fallback_rule: str = "max_prob",
    fallback_head: object | None = None,
    policy: BiLDPolicy | None = None,
    max_new_tokens: int = 128,
    reference_compat: bool = False,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    vocab_size: int | None = None,
    engine: str = "auto",
    shared_checks: bool = False,
) -> BiLDOutput:
    """Big Little Decoding of one input, or of a batch (each row on its own course).

    Args:
        small, large: two encoder-decoder or two decoder-only models sharing a vocabulary and
            special tokens, in eval mode (dropout would make the output random).
        input_ids, attention_mask: the encoder input, or the prompt: shape (1, length), or
            (batch, length) with padding as `generate` takes it for the model.
        fallback_threshold: the small model hands control to the large one when its
            confidence is below this (0: never; above 1: always, i.e. large-only decoding).
        rollback_threshold: the large model replaces a drafted token when its cross-entropy of
            that token exceeds this and its own choice differs (0: the exact mode).
        max_small_steps: most consecutive small-model tokens before the large model checks.
        fallback_rule: the small model's confidence: "max_prob" (its top probability, the
            paper's rule), "entropy" (exp(-entropy of its distribution)) or "learned" (a
            trained head's probability that the large model agrees; give `fallback_head`).
        fallback_head: the learned rule's head (`bild_align.load_fallback_head(small_dir)`).
        policy: a `BiLDPolicy` holding those settings (e.g. `load_policy(small_dir)`,
            what `bild-align tune --save` chose); when given, the five arguments are not read.
        max_new_tokens: most tokens generated.
        reference_compat: reproduce the original implementation's decisions (the large model
            produces the first token and the token after each correction, no check of the
            drafted tail at the end, its rollback rule, decoding on past an EOS produced by a
            rollback) to reproduce the paper's numbers token for token.
        do_sample, temperature, top_k, top_p, seed: sample instead of taking the argmax; the
            fallback reads the small model's sampling distribution, the rollback the large
            model's cross-entropy of the sampled token. In a batch, row i samples with seed + i.
        vocab_size: the token ids the models share (default: all of their output embeddings,
            which must then have the same size); pass len(tokenizer) for a pair whose
            embeddings are padded to different sizes.
        engine: "auto" runs the T5 family, BART / mBART / Marian / Pegasus, Llama, Mistral, Qwen2/3
            on the lean decoder steps (`lean`) and every other model on transformers'
            forward; "transformers" always uses the latter.
        shared_checks: in a batch decoded together, check every row that holds drafts
            whenever one row needs a check, so that the rows stay in step and each large-model
            pass serves all of them (a row then no longer decides exactly as it would alone;
            the exact mode stays exact). Without it each row is checked on its own schedule.
    """
    if policy is None:
        policy = BiLDPolicy(
            fallback_threshold, rollback_threshold, max_small_steps, fallback_rule, fallback_head
        )
    if reference_compat:
        policy = ReferencePolicy(
            **{entry.name: getattr(policy, entry.name) for entry in fields(policy)}
        )
    return decode(
        small,
        large,
        input_ids,
        attention_mask,
        policy,
        Sampler(do_sample, temperature, top_k, top_p, seed, large.device),
        max_new_tokens=max_new_tokens,
        vocab_size=vocab_size,
        engine=engine,
        shared_checks=shared_checks,
    )


def speculative_generate(
    small: PreTrainedModel,
    large: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    *,
    gamma: int = 4,
    max_new_tokens: int = 128,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    vocab_size: int | None = None,
    engine: str = "auto",
) -> BiLDOutput:
    """Classic speculative decoding: `gamma` drafted tokens per large-model call, verified so
    that the output follows the large model's (greedy or sampling) distribution exactly.
    `out.stats.acceptance_rate` is accepted drafts / drafted tokens. `vocab_size`, `engine`:
    as in `bild_generate`."""
    check_count("gamma", gamma)
    return decode(
        small,
        large,
        input_ids,
        attention_mask,
        SpeculativePolicy(max_small_steps=gamma),
        Sampler(do_sample, temperature, top_k, top_p, seed, large.device),
        max_new_tokens=max_new_tokens,
        vocab_size=vocab_size,
        engine=engine,
    )


def autoregressive_generate(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 128,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    engine: str = "auto",
) -> BiLDOutput:
    """One model alone, one token per forward pass, through the same machinery as the two-model
    decoders: the fair baseline for timing them. `engine`: as in `bild_generate`."""
    # the one model takes the large model's place: it checks nothing, it only appends
    return decode(
        None,
        model,
        input_ids,
        attention_mask,
        BiLDPolicy(max_small_steps=1),
        Sampler(do_sample, temperature, top_k, top_p, seed, model.device),
        max_new_tokens=max_new_tokens,
        vocab_size=None,
        engine=engine,
    )
