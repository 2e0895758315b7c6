"""Random T5 pairs built in code, with a real size ratio and a chosen agreement.

    small = random_t5(vocab_size=128, d_model=64, num_layers=2, confidence=8.0, seed=0)
    large = deepen(small, extra_layers=6, eps=0.05, head_noise=0.5, seed=1)
    agreement(small, large, input_ids)   # share of large-greedy positions where both agree

Two unrelated random models disagree on nearly every token. `deepen` builds the large model
from the small one instead: the small model's layers are copied into the first layers, and each
extra layer has its output projections scaled by `eps`, so it is close to the identity. The
large model costs more per token but predicts nearly what the small one predicts; `eps` and
`head_noise` lower the agreement. `confidence` scales the output layer up, because random models
are nearly uniform and a small model that is never confident always falls back.

Used by the tests and the decoder benchmark; no network, no files.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator (which model constructors draw from) for the block only:
    the caller's random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def random_t5(
    *,
    vocab_size: int = 128,
    d_model: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    d_ff: int | None = None,
    gated: bool = False,
    confidence: float = 1.0,
    eos_weight: float = 1.0,
    seed: int = 0,
) -> T5ForConditionalGeneration:
    """A randomly initialised T5 (or T5 v1.1-style gated) model in eval mode, untied head.

    `confidence` scales the output layer; `eos_weight` scales the EOS row of it (0 makes the
    model run to the length limit, which keeps benchmark outputs long).
    """
    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=d_ff or 4 * d_model,
        num_layers=num_layers,
        num_decoder_layers=num_layers,  # generate() sizes its cache by num_layers
        num_heads=num_heads,
        feed_forward_proj="gated-gelu" if gated else "relu",
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    with _seeded(seed):
        model = T5ForConditionalGeneration(config)
        # transformers 5 always ties T5's head to the embeddings when built from a config; real
        # (m)T5 v1.1 checkpoints have their own head, so give the toy one its own too. (A head
        # equal to the embeddings also makes random models repeat their last token forever.)
        head = torch.randn(vocab_size, d_model) * confidence
    head[config.eos_token_id] *= eos_weight
    model.lm_head.weight = nn.Parameter(head)
    return model.eval()


def _stack_copy(blocks: nn.ModuleList, extra_layers: int, eps: float) -> nn.ModuleList:
    """`blocks` followed by `extra_layers` near-identity copies of its last block."""
    new_blocks = [copy.deepcopy(block) for block in blocks]
    for _ in range(extra_layers):
        block = copy.deepcopy(blocks[-1])
        for sublayer in block.layer:
            for name in ("SelfAttention", "EncDecAttention"):
                if hasattr(sublayer, name):
                    attention = getattr(sublayer, name)
                    attention.o.weight.data.mul_(eps)
                    if attention.has_relative_attention_bias:  # only the first layer has one
                        attention.has_relative_attention_bias = False
                        del attention.relative_attention_bias
            if hasattr(sublayer, "DenseReluDense"):
                sublayer.DenseReluDense.wo.weight.data.mul_(eps)
        new_blocks.append(block)
    return nn.ModuleList(new_blocks)


def deepen(
    small: T5ForConditionalGeneration,
    *,
    extra_layers: int,
    eps: float = 0.05,
    head_noise: float = 0.0,
    seed: int = 0,
) -> T5ForConditionalGeneration:
    """A deeper copy of `small` (encoder and decoder) that mostly agrees with it.

    Extra layers are perturbed copies of the last layer (weights jittered, output projections
    scaled by `eps`); `head_noise` adds Gaussian noise, relative to the head's scale, to the
    output layer.
    """
    large = copy.deepcopy(small)
    total = small.config.num_layers + extra_layers
    for config in (large.config, large.encoder.config, large.decoder.config):
        config.num_layers = config.num_decoder_layers = total
    large.encoder.block = _stack_copy(small.encoder.block, extra_layers, eps)
    large.decoder.block = _stack_copy(small.decoder.block, extra_layers, eps)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in list(large.encoder.block[small.config.num_layers :]) + list(
            large.decoder.block[small.config.num_layers :]
        ):
            for parameter in block.parameters():
                if parameter.dim() == 2:
                    noise = torch.randn(parameter.shape, generator=generator)
                    parameter.add_(noise * parameter.std() * 0.5)
        head = large.lm_head.weight
        head.add_(torch.randn(head.shape, generator=generator) * head.std() * head_noise)
    for index, block in enumerate(large.decoder.block):
        for sublayer in block.layer:
            for name in ("SelfAttention", "EncDecAttention"):
                if hasattr(sublayer, name):
                    getattr(sublayer, name).layer_idx = index
    for index, block in enumerate(large.encoder.block):
        block.layer[0].SelfAttention.layer_idx = index
    return large.eval()


def random_inputs(
    count: int, *, vocab_size: int, min_length: int = 4, max_length: int = 24, seed: int = 0
) -> list[torch.LongTensor]:
    """`count` random encoder inputs (1, length), ending with EOS like tokenized text."""
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for _ in range(count):
        length = int(torch.randint(min_length, max_length + 1, (1,), generator=generator))
        ids = torch.randint(2, vocab_size, (1, length), generator=generator)
        ids[0, -1] = 1
        inputs.append(ids)
    return inputs


@torch.inference_mode()
def agreement(small, large, input_ids: torch.LongTensor, max_new_tokens: int = 32) -> float:
    """Share of positions on the large model's greedy output where the small argmax agrees."""
    target = large.generate(input_ids, do_sample=False, max_new_tokens=max_new_tokens)
    if large.config.is_encoder_decoder:
        inputs = {"input_ids": input_ids, "decoder_input_ids": target}
        new = slice(None)
    else:  # the prompt followed by the output; compare on the output positions only
        inputs = {"input_ids": target}
        new = slice(input_ids.shape[1] - 1, -1)
    small_argmax = small(**inputs).logits.argmax(-1)[:, new]
    large_argmax = large(**inputs).logits.argmax(-1)[:, new]
    return (small_argmax == large_argmax).float().mean().item()


def random_llama(
    *,
    vocab_size: int = 128,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    confidence: float = 1.0,
    eos_weight: float = 1.0,
    seed: int = 0,
    sliding_window: int | None = None,
    kv_heads: int | None = None,
):
    """A randomly initialised Llama-style decoder-only model in eval mode (untied head); with
    `sliding_window`, a Mistral model whose attention sees only that many recent tokens; with
    `kv_heads`, grouped-query attention."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    config_class, model_class = (LlamaConfig, LlamaForCausalLM)
    window = {}
    if sliding_window is not None:
        config_class, model_class = (MistralConfig, MistralForCausalLM)
        window = {"sliding_window": sliding_window}
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=kv_heads or num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=0,
        **window,
    )
    with _seeded(seed):
        model = model_class(config)
        head = torch.randn(vocab_size, hidden_size) * confidence / hidden_size**0.5
    head[config.eos_token_id] *= eos_weight
    model.lm_head.weight = nn.Parameter(head)
    return model.eval()


def deepen_llama(small, *, extra_layers: int, eps: float = 0.05, seed: int = 0):
    """A deeper copy of a Llama-style model whose extra layers are near the identity."""
    large = copy.deepcopy(small)
    generator = torch.Generator().manual_seed(seed)
    layers = list(large.model.layers)
    for _ in range(extra_layers):
        layer = copy.deepcopy(small.model.layers[-1])
        with torch.no_grad():
            for parameter in layer.parameters():
                if parameter.dim() == 2:
                    noise = torch.randn(parameter.shape, generator=generator)
                    parameter.add_(noise * parameter.std() * 0.5)
            layer.self_attn.o_proj.weight.mul_(eps)
            layer.mlp.down_proj.weight.mul_(eps)
        layers.append(layer)
    large.model.layers = nn.ModuleList(layers)
    for index, layer in enumerate(large.model.layers):
        layer.self_attn.layer_idx = index
    large.config.num_hidden_layers = len(layers)
    large.config.layer_types = None
    return large.eval()


BART_FAMILIES = ("bart", "mbart", "marian", "pegasus")


def random_bart(
    family: str = "bart",
    *,
    vocab_size: int = 96,
    d_model: int = 48,
    num_layers: int = 1,
    num_heads: int = 4,
    ffn_dim: int | None = None,
    confidence: float = 6.0,
    eos_weight: float = 1.0,
    scale_embedding: bool = False,
    seed: int = 0,
):
    """A randomly initialised BART, mBART, Marian or Pegasus model in eval mode (untied head, random
    `final_logits_bias` and position table, weights larger than the default init so that
    attention is not uniform); ids: pad and decoder start 0, EOS 1."""
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        MarianConfig,
        MarianMTModel,
        MBartConfig,
        MBartForConditionalGeneration,
        PegasusConfig,
        PegasusForConditionalGeneration,
    )

    config_class, model_class = {
        "bart": (BartConfig, BartForConditionalGeneration),
        "mbart": (MBartConfig, MBartForConditionalGeneration),
        "marian": (MarianConfig, MarianMTModel),
        "pegasus": (PegasusConfig, PegasusForConditionalGeneration),
    }[family]
    config = config_class(
        vocab_size=vocab_size,
        d_model=d_model,
        encoder_layers=1,
        decoder_layers=num_layers,
        encoder_attention_heads=num_heads,
        decoder_attention_heads=num_heads,
        encoder_ffn_dim=ffn_dim or 2 * d_model,
        decoder_ffn_dim=ffn_dim or 2 * d_model,
        max_position_embeddings=128,
        scale_embedding=scale_embedding,
        init_std=0.2 * (48 / d_model) ** 0.5,  # attention far from uniform at any width
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        tie_word_embeddings=False,
    )
    with _seeded(seed):
        model = model_class(config)
        head = torch.randn(vocab_size, d_model) * confidence / d_model**0.5
        bias = torch.randn(1, vocab_size) * 0.5
        positions = model.model.decoder.embed_positions.weight
        table = torch.randn(positions.shape) * 0.5
    head[config.eos_token_id] *= eos_weight
    if not eos_weight:
        bias[0, config.eos_token_id] = 0.0
    model.lm_head.weight = nn.Parameter(head)
    with torch.no_grad():
        model.final_logits_bias.copy_(bias)
        if family not in ("marian", "pegasus"):  # their tables are fixed sinusoids
            positions.copy_(table)
    return model.eval()


def deepen_bart(small, *, extra_layers: int, eps: float = 0.05, seed: int = 0):
    """A deeper copy of a BART-family model whose extra decoder layers are near the identity
    (jittered copies of the last layer, output projections scaled by `eps`)."""
    large = copy.deepcopy(small)
    generator = torch.Generator().manual_seed(seed)
    layers = list(large.model.decoder.layers)
    for _ in range(extra_layers):
        layer = copy.deepcopy(small.model.decoder.layers[-1])
        with torch.no_grad():
            for parameter in layer.parameters():
                if parameter.dim() == 2:
                    noise = torch.randn(parameter.shape, generator=generator)
                    parameter.add_(noise * parameter.std() * 0.5)
            for projection in (layer.self_attn.out_proj, layer.encoder_attn.out_proj, layer.fc2):
                projection.weight.mul_(eps)
                projection.bias.mul_(eps)
        layers.append(layer)
    large.model.decoder.layers = nn.ModuleList(layers)
    for index, layer in enumerate(large.model.decoder.layers):
        layer.self_attn.layer_idx = layer.encoder_attn.layer_idx = index
    large.config.decoder_layers = len(layers)
    return large.eval()
