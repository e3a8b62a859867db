"""Interleaved timing for side-by-side benchmarks: ours, theirs, ours, ... then medians.

Alternating the two sides step by step means a burst of load from elsewhere on
a shared machine slows both alike, so their ratio stays meaningful.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def interleaved(
    fn_ours: Callable[[], object], fn_theirs: Callable[[], object], *, warmup: int, repeats: int, device: torch.device
) -> tuple[float, float]:
    """Median seconds per call of each function, after `warmup` untimed rounds."""
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for i in range(warmup + repeats):
        for name, fn in (("ours", fn_ours), ("theirs", fn_theirs)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return statistics.median(times["ours"]), statistics.median(times["theirs"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
