"""Latency measurement: device synchronisation, per-call wall time, time inside forward passes.

seconds, result = timed(lambda: model.generate(ids), device)
with ForwardClock([small, large], device) as clock:   # time spent in model forward passes
    bild_generate(small, large, ids)
clock.seconds
summarize([0.12, 0.10, 0.11])   # {"count": 3, "median_s": 0.11, "total_s": 0.33}
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall time measures it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], T], device: torch.device) -> tuple[float, T]:
    """Wall-clock seconds of `call()` with the device synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    result = call()
    synchronize(device)
    return time.perf_counter() - start, result


def environment(device: torch.device) -> dict[str, str | int]:
    """What a reported time depends on: versions, device, threads."""
    import platform

    import transformers

    import bild_align

    return {
        "bild_align": bild_align.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def summarize(seconds: list[float]) -> dict[str, float]:
    return {
        "count": len(seconds),
        "median_s": statistics.median(seconds) if seconds else 0.0,
        "total_s": sum(seconds),
    }


class ForwardClock:
    """Adds up the wall time spent inside the forward passes of the given modules (and in the
    lean decoder steps, which use the modules' weights without calling them).

    Hooks synchronise the device around every forward pass, which costs a little time on GPU, so
    use it in a separate, instrumented run rather than in the run whose latency is reported.
    """

    def __init__(self, modules: Iterable[nn.Module], device: torch.device) -> None:
        self.modules = list(modules)
        self.device = device
        self.seconds = 0.0
        self._handles: list[Any] = []
        self._starts: list[float] = []

    def _before(self, *_: Any) -> None:
        synchronize(self.device)
        self._starts.append(time.perf_counter())

    def _after(self, *_: Any) -> None:
        synchronize(self.device)
        start = self._starts.pop()
        if not self._starts:  # count nested forward passes once
            self.seconds += time.perf_counter() - start

    def __enter__(self) -> ForwardClock:
        from bild_align.core.loop import STEP_OBSERVER

        for module in self.modules:
            self._handles.append(module.register_forward_pre_hook(self._before))
            self._handles.append(module.register_forward_hook(self._after))
        # the lean steps run a decoder without calling its module: the decode loop reports
        # each step to an observer set for this context only (no class is patched)
        self._observer = STEP_OBSERVER.set(SimpleNamespace(before=self._before, after=self._after))
        return self

    def __exit__(self, *_: Any) -> None:
        from bild_align.core.loop import STEP_OBSERVER

        STEP_OBSERVER.reset(self._observer)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
