"""One encoder pass per input when the small model's encoder *is* the large model's (a
drafter made by `bild-align drafter`, tied by `models.load_pair` or `tie_shared_encoder`).

    with encoder_passes_shared():             # around the building of one call's steppers
        small_step = lean_decoder(small, ids, mask, capacity)   # encodes
        large_step = lean_decoder(large, ids, mask, capacity)   # reuses that output

Inside the block, `encoded_once(encoder, input_ids, mask, encode)` runs `encode()` once per
encoder module and input: two models whose encoders are one module share the output; two
different encoders (an ordinary pair) still encode twice. Outside a block it simply encodes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

_OUTPUTS: ContextVar[dict | None] = ContextVar("bild_align_encoder_outputs", default=None)


@contextlib.contextmanager
def encoder_passes_shared() -> Iterator[None]:
    token = _OUTPUTS.set({})
    try:
        yield
    finally:
        _OUTPUTS.reset(token)


def encoded_once(encoder: Any, input_ids: Any, attention_mask: Any, encode: Callable[[], Any]):
    """`encode()`, or its result for this encoder module and these inputs earlier in the block.
    (Keys are the module's identity and the inputs' memory and shape: the block lives within
    one call, where its inputs do; a row's slice of a batch is the same for both models. The
    memo holds the encoder too, so that a short-lived encoder object's id is never reused.)"""
    outputs = _OUTPUTS.get()
    if outputs is None:
        return encode()
    key = (id(encoder), *_where(input_ids), *_where(attention_mask))
    if key not in outputs:  # the encoder is kept with its output: its id is not reused
        outputs[key] = (encoder, encode())
    return outputs[key][1]


def _where(tensor) -> tuple:
    if tensor is None:
        return (None,)
    return (tensor.device, tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
