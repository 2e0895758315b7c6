"""Bad arguments raise ValueError with a message that says what to do."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from bild_align import bild_generate
from bild_align.models.toy import random_t5

SMALL = random_t5(vocab_size=64, d_model=32, num_layers=1, seed=0)
LARGE = random_t5(vocab_size=64, d_model=32, num_layers=2, seed=1)
INPUT = torch.tensor([[5, 6, 1]])


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"fallback_threshold": -0.1}, "fallback_threshold must be a number >= 0"),
        ({"fallback_threshold": float("nan")}, "fallback_threshold"),
        ({"fallback_threshold": "0.5"}, "fallback_threshold"),
        ({"rollback_threshold": -1}, "rollback_threshold must be a number >= 0"),
        ({"max_small_steps": 0}, "max_small_steps must be a positive integer"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
    ],
)
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        bild_generate(SMALL, LARGE, INPUT, **settings)


def test_threshold_edges_are_accepted():
    for fb, rb in ((0, 0), (1.0, float("inf")), (5, 1e9)):
        out = bild_generate(
            SMALL, LARGE, INPUT, fallback_threshold=fb, rollback_threshold=rb, max_new_tokens=3
        )
        assert out.stats.generated >= 1


def test_vocabulary_mismatch():
    other = random_t5(vocab_size=80, d_model=32, num_layers=1)
    with pytest.raises(ValueError, match="vocabularies differ"):
        bild_generate(other, LARGE, INPUT)


def test_special_token_mismatch():
    other = random_t5(vocab_size=64, d_model=32, num_layers=1)
    other.generation_config.eos_token_id = 2
    with pytest.raises(ValueError, match="special tokens differ"):
        bild_generate(other, LARGE, INPUT)


def test_decoder_only_model_is_refused():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2)).eval()
    with pytest.raises(ValueError, match="decoder-only GPT2LMHeadModel"):
        bild_generate(gpt2, LARGE, INPUT)


def test_empty_inputs_and_unknown_engines():
    with pytest.raises(ValueError, match="no rows"):
        bild_generate(SMALL, LARGE, torch.zeros((0, 3), dtype=torch.long))
    with pytest.raises(ValueError, match="masks every input token of a row"):
        rows = torch.tensor([[5, 6], [7, 8]])
        bild_generate(SMALL, LARGE, rows, torch.tensor([[1, 1], [0, 0]]))
    with pytest.raises(ValueError, match="engine must be one of auto, transformers"):
        bild_generate(SMALL, LARGE, INPUT, engine="fast")
    with pytest.raises(ValueError, match="empty"):
        bild_generate(SMALL, LARGE, torch.zeros((1, 0), dtype=torch.long))
    with pytest.raises(ValueError, match="masks every input token"):
        bild_generate(SMALL, LARGE, INPUT, torch.zeros_like(INPUT))
    with pytest.raises(ValueError, match="must match"):
        bild_generate(SMALL, LARGE, INPUT, torch.ones((1, 5), dtype=torch.long))
