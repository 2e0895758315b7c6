"""The decoder steps behind one contract, `Stepper`: the lean steps of our own (T5, BART and
Llama families) and transformers' forward (`hf_forward`); `lean.lean_decoder` says which one
runs. Each is built for one call over a batch's rows, `Engine(model, input_ids,
attention_mask, capacity)` (an encoder-decoder engine encodes the inputs then), and answers
`step` until the call ends.
"""

from __future__ import annotations

from typing import Protocol

import torch
from transformers import PreTrainedModel

# The contract's argument types, named once (the engines' signatures use them).
Model = PreTrainedModel
Ids = torch.LongTensor  # token ids, (rows, k)
Mask = torch.Tensor | None  # an attention mask over the inputs, or none
Starts = torch.Tensor | int  # each row's first new position, or one for all rows
Rows = torch.LongTensor | None  # which of the batch's rows a step feeds (None: all)
Keep = torch.Tensor | int | None  # where the output layer runs (see `Stepper.step`)


class Stepper(Protocol):
    """What the decode loop asks of an engine."""

    device: torch.device
    batch_size: int  # the rows it was built for
    last_hidden: torch.Tensor | None  # what the output layer read last (a learned fallback)

    def step(self, new_ids: Ids, starts: Starts, rows: Rows = None, keep: Keep = None):
        """Feed `new_ids` (rows, k) at positions starts .. starts+k-1 of each row's cache;
        return the logits (rows, k, vocab). `rows` selects rows of the batch (default: all);
        an int `starts` is the same position for every row. `keep` computes the output layer
        (a large share of a step with a big vocabulary) only where it is read: an int n keeps
        the last n positions, (rows, n, vocab); a boolean (rows, k) mask keeps the marked
        positions, (marked, vocab) in row-major order."""
        ...
