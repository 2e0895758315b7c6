"""Scripted stand-ins for encoder-decoder models: the test chooses every next-token distribution.

    large = ScriptedSeq2Seq(lambda prefix: (next_token(prefix), 0.9))
    small = ScriptedSeq2Seq(lambda p: (7, 0.3) if len(p) == 4 else (next_token(p), 0.9))

A script maps the decoder prefix (start token included) to (token, probability): the token gets
that probability and the rest is shared evenly. The model keeps the tokens it has been fed in a
real transformers KV cache (keys = token ids), so cache reuse and cropping by the decoder are
exercised for real, and `calls` records how many tokens each forward pass was fed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import torch
from torch import nn
from transformers import GenerationConfig, PretrainedConfig

VOCAB = 64
START, EOS = 0, 1


def next_token(prefix: tuple[int, ...]) -> int:
    """A deterministic 'language': the next token depends on the whole prefix, never EOS."""
    return 2 + (31 * len(prefix) + 7 * sum(prefix)) % (VOCAB - 2)


def distribution(token: int, probability: float) -> torch.Tensor:
    rest = (1.0 - probability) / (VOCAB - 1)
    logits = torch.full((VOCAB,), math.log(rest))
    logits[token] = math.log(probability)
    return logits


class ScriptedSeq2Seq(nn.Module):
    def __init__(self, script: Callable[[tuple[int, ...]], tuple[int, float]]) -> None:
        super().__init__()
        self.script = script
        self.config = PretrainedConfig(
            is_encoder_decoder=True,
            vocab_size=VOCAB,
            decoder_start_token_id=START,
            eos_token_id=EOS,
            pad_token_id=START,
            num_hidden_layers=1,
        )
        self.generation_config = GenerationConfig(
            decoder_start_token_id=START, eos_token_id=EOS, pad_token_id=START
        )
        self.head = nn.Linear(1, VOCAB, bias=False)
        self.calls: list[int] = []
        self.encoder_runs = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def get_output_embeddings(self) -> nn.Module:
        return self.head

    def get_encoder(self):
        def encode(input_ids, attention_mask=None, return_dict=True):
            self.encoder_runs += 1
            return SimpleNamespace(last_hidden_state=torch.zeros(1, input_ids.shape[1], 1))

        return encode

    def forward(self, *, decoder_input_ids, past_key_values, **_):
        cache = past_key_values.self_attention_cache
        cached = [] if cache.get_seq_length() == 0 else cache.layers[0].keys[0, 0, :, 0].tolist()
        new = decoder_input_ids[0].tolist()
        ids = decoder_input_ids.float().view(1, 1, -1, 1)
        cache.update(ids, ids, 0)
        self.calls.append(len(new))
        prefix = [int(token) for token in cached]
        rows = []
        for token in new:
            prefix.append(token)
            rows.append(distribution(*self.script(tuple(prefix))))
        return SimpleNamespace(logits=torch.stack(rows)[None])


def large_greedy(script, max_new_tokens: int) -> list[int]:
    """What greedy decoding with `script` alone produces."""
    tokens = [START]
    while len(tokens) - 1 < max_new_tokens:
        tokens.append(script(tuple(tokens))[0])
        if tokens[-1] == EOS:
            break
    return tokens
