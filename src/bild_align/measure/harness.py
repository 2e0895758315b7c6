"""One measurement harness for `eval` and `bench`: methods timed on the same inputs, after a
warm-up, interleaved per example (machine drift hits all alike), with the device synchronised
and only generation timed. The first method is the reference (the large model).

    methods = [Method("large", {}, generate_large), Method("bild", {"rb": 2.0}, generate_bild)]
    warm_up(methods, first_input_ids, first_mask)
    for input_ids, mask in examples:
        for method, result in zip(methods, run_example(methods, input_ids, mask, device)):
            method.add(result.seconds, output_of(result), result.stats, same_as_reference)
    rows = summaries(methods)      # latency, speedup over the reference, identical outputs, stats

A method's `generate(input_ids, attention_mask)` returns (sequences, BiLDStats or None). A batch
of inputs is one call: `add_batch` records its time once, its outputs and new tokens per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from bild_align.core.stats import BiLDStats
from bild_align.measure.timing import summarize, timed

Generate = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, BiLDStats | None]]


@dataclass
class Method:
    """One method at one setting, accumulated over the examples."""

    name: str
    setting: dict
    generate: Generate
    seconds: list[float] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    stats: BiLDStats | None = None  # set for the decoders that count (BiLD, speculative)
    identical: int = 0  # examples whose output equals the reference method's
    tokens: int = 0  # new tokens generated (for tokens per second)
    error: str | None = None  # why it failed, where failures are tolerated: it runs no more

    def add(self, seconds: float, output: Any, stats: BiLDStats | None, identical: bool) -> None:
        self.add_batch(seconds, [output], stats, int(identical), 0)

    def add_batch(
        self,
        seconds: float,
        outputs: list[Any],
        stats: BiLDStats | None,
        identical: int,
        tokens: int,
    ) -> None:
        """One call's time, its outputs (one per row), and how many rows equal the reference."""
        self.seconds.append(seconds)
        self.outputs.extend(outputs)
        self.identical += identical
        self.tokens += tokens
        if stats is not None:
            self.stats = self.stats or BiLDStats()
            self.stats += stats


@dataclass
class Result:
    seconds: float
    sequences: torch.Tensor | None
    stats: BiLDStats | None
    error: str | None = None  # the method failed (or had failed before): no sequences


def _failure(error: Exception) -> str:
    """A failure in one line: the exception's type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def new_tokens(sequences: torch.Tensor, eos_ids: set[int], prefix_length: int) -> int:
    """New tokens in a batch of outputs: each row's tokens after the prefix, up to and including
    its first EOS (what follows is padding)."""
    count = 0
    for row in sequences[:, prefix_length:].tolist():
        ends = [index for index, token in enumerate(row) if token in eos_ids]
        count += ends[0] + 1 if ends else len(row)
    return count


def warm_up(
    methods: list[Method], input_ids: torch.Tensor, attention_mask=None, tolerate: bool = False
) -> None:
    """One untimed call each: kernels, caches and the allocator settle before timing. With
    `tolerate`, a method after the reference that raises is marked failed (`Method.error`)."""
    for index, method in enumerate(methods):
        if method.error is not None:
            continue
        try:
            method.generate(input_ids, attention_mask)
        except Exception as error:
            if not tolerate or index == 0:
                raise
            method.error = _failure(error)


def run_example(
    methods: list[Method],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    device: torch.device,
    on_done: Callable[[Method], None] | None = None,
    tolerate: bool = False,
) -> list[Result]:
    """Every method on this example, in order, each timed with the device synchronised. With
    `tolerate`, a method after the reference that raises is marked failed and skipped from
    then on (its results carry the error), so that the others' work is kept."""
    results = []
    for index, method in enumerate(methods):
        if method.error is None:
            try:
                seconds, (sequences, stats) = timed(
                    lambda m=method: m.generate(input_ids, attention_mask), device
                )
                results.append(Result(seconds, sequences, stats))
            except Exception as error:
                if not tolerate or index == 0:
                    raise
                method.error = _failure(error)
        if method.error is not None:
            results.append(Result(0.0, None, None, method.error))
        if on_done is not None:
            on_done(method)
    return results


def fastest(candidates: list[Method], inputs: list[torch.Tensor], device) -> Method:
    """The candidate with the least total time on `inputs` (after one warm-up call each), with
    every candidate's total recorded in its setting under `tuned_over`."""
    totals = []
    for method in candidates:
        method.generate(inputs[0], None)
        totals.append(
            sum(timed(lambda m=method, x=x: m.generate(x, None), device)[0] for x in inputs)
        )
    best = candidates[totals.index(min(totals))]
    best.setting["tuned_over"] = [
        {**m.setting, "total_s": round(t, 4)} for m, t in zip(candidates, totals, strict=True)
    ]
    return best


def summaries(methods: list[Method]) -> list[dict]:
    """One row per method: latency, speedup over the first method, identical outputs, stats."""
    reference_total = sum(methods[0].seconds)
    rows = []
    for method in methods:
        total = sum(method.seconds)
        row = {
            "method": method.name,
            "setting": method.setting,
            "latency": summarize(method.seconds),
            "speedup": reference_total / total if total else 0.0,
            "identical_to_large": method.identical,
        }
        if method.tokens:
            row["tokens_per_s"] = method.tokens / total if total else 0.0
        if method.stats is not None:
            row["stats"] = method.stats.as_dict()
        rows.append(row)
    return rows
