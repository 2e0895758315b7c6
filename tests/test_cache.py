"""KV caches: reused across calls, cropped on rollback, equal to a fresh pass afterwards."""

import torch

from bild_align.core.engines.hf_forward import DecoderState
from bild_align.models.toy import random_inputs, random_t5


def test_cropped_cache_gives_fresh_pass_logits():
    for seed, gated in ((0, False), (1, True)):
        model = random_t5(vocab_size=100, d_model=48, num_layers=3, gated=gated, seed=seed)
        input_ids = random_inputs(1, vocab_size=100, seed=seed)[0]
        prefix = torch.tensor([[0, 5, 9, 13, 2, 44, 71, 8]])
        state = DecoderState(model, input_ids, None)
        with torch.inference_mode():
            state.feed(prefix[:, :3])
            state.feed(prefix[:, 3:4])
            state.feed(prefix[:, 4:])  # drafts at positions 4..7, then rejected from 5 on
            assert state.length == 8
            cross_before = [
                layer.keys.clone() for layer in state.cache.cross_attention_cache.layers
            ]
            state.crop(5)
            assert state.length == 5
            correction = torch.tensor([[61, 17]])
            incremental = state.feed(correction)
            fresh = model(
                input_ids=input_ids,
                decoder_input_ids=torch.cat([prefix[:, :5], correction], dim=1),
            ).logits[0, 5:]
        torch.testing.assert_close(incremental, fresh, rtol=1e-4, atol=1e-4)
        # cross-attention keys/values are per input and survive the crop untouched
        for before, layer in zip(
            cross_before, state.cache.cross_attention_cache.layers, strict=True
        ):
            assert torch.equal(before, layer.keys)


def test_crop_beyond_length_is_a_no_op():
    model = random_t5(vocab_size=50, d_model=32, num_layers=1)
    state = DecoderState(model, torch.tensor([[3, 4, 1]]), None)
    with torch.inference_mode():
        state.feed(torch.tensor([[0, 7]]))
    state.crop(10)
    assert state.length == 2
