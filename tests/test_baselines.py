"""transformers' assisted generation as our baselines call it, and transformers' forward as
the decode loop's generic engine calls it: right on the installed transformers, warning-free."""

import warnings

import pytest
import torch

from bild_align.core.engines.hf_forward import DecoderState
from bild_align.models.loading import assisted_inputs
from bild_align.models.toy import deepen, deepen_bart, random_bart, random_t5


def _pair(family):
    if family == "bart":
        small = random_bart("bart", vocab_size=384, d_model=32, seed=7)
        return small, deepen_bart(small, extra_layers=2, eps=0.05, seed=8)
    small = random_t5(vocab_size=384, d_model=32, num_layers=1, confidence=8.0, seed=7)
    return small, deepen(small, extra_layers=2, eps=0.05, seed=8)


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_assisted_generation_as_the_baselines_call_it_equals_greedy(family):
    """transformers 5.25 lets an encoder-decoder assistant's cache grow past its sequence
    (BART: IndexError for inputs longer than the draft); `assisted_inputs` keeps it right."""
    small, large = (model.eval() for model in _pair(family))
    generator = torch.Generator().manual_seed(0)
    for _ in range(8):
        length = int(torch.randint(5, 30, (1,), generator=generator))
        ids = torch.randint(4, 384, (1, length), generator=generator)
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            greedy = large.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False)
            assisted = large.generate(
                ids, attention_mask=mask, max_new_tokens=20, do_sample=False,
                assistant_model=small, **assisted_inputs(large, ids),
            )  # fmt: skip
        assert torch.equal(assisted, greedy)


def test_the_forward_engine_raises_no_deprecation_warning():
    """transformers 5.25 renamed the cache argument (past_key_values -> cache) with a warning
    on every call; the engine passes it by the name the model takes."""
    model = random_t5(vocab_size=100, d_model=32, num_layers=2, seed=3).eval()
    ids = torch.randint(4, 100, (1, 9))
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("error")
        state = DecoderState(model, ids, None)
        state.feed(torch.tensor([[0, 5, 9]]))
        state.crop(2)
        state.feed(torch.tensor([[7]]))
    assert state.length == 3
