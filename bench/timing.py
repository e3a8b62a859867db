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
    times = interleaved_many({"ours": fn_ours, "theirs": fn_theirs}, warmup=warmup, repeats=repeats, device=device)
    return times["ours"], times["theirs"]


def interleaved_many(
    fns: dict[str, Callable[[], object]], *, warmup: int, repeats: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each named function, called in turn each round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
