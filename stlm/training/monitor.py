"""What a running training job reports about its speed: MFU, peak memory, ETA, TensorBoard.

The loop measures tokens/s and bytes/s over each log interval; a `RunMonitor`
adds to every such record

    mfu           model matmul FLOPs per second / this device's measured matmul peak
    flops_per_s   model matmul FLOPs per second
    peak_mem_mib  peak RSS of the process on CPU, max_memory_allocated on CUDA
    eta_s         seconds left at this session's average pace (evaluation and saving included)

and, if asked, mirrors the scalars to TensorBoard. FLOPs per token come from
counting one step (`flops.training_step_flops`).

The matmul peak is measured, and a busy machine measures it low (another job's
threads take the cores for a moment), which once showed MFU=104%. So
`device_peak` takes the best of a fresh measurement (itself the best of
several short trials), this machine's figure cached in the stlm cache folder
(keyed by host, device, precision and threads; only ever raised) and, on
resume, the run's own; the run header says which it used. If a step still
runs faster than the peak, `RunMonitor` measures again, and if the step beats
that too, the rate the step reached becomes the peak (a lower bound on the
true one) and the record says so: MFU never reads above 100%, and nothing is
clamped silently.
"""

from __future__ import annotations

import datetime
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stlm.errors import UserError
from stlm.runtime import read_json_cache, write_json_cache
from stlm.training.flops import matmul_peak, training_step_flops

PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PEAK_CACHE = "matmul_peak.json"  # in the stlm cache folder: {machine key: {"flops_per_s", "measured"}}
PEAK_REPEATS = 5  # matmuls timed per measurement (after two warm-ups); the fastest counts


@dataclass
class MatmulPeak:
    flops_per_s: float
    source: str  # where the figure came from: "measured now", "cached from 2025-01-31", ...

    def to_dict(self, device: torch.device, precision: str) -> dict[str, Any]:
        """The run header's `matmul_peak` entry."""
        return {"device": str(device), "precision": precision, "flops_per_s": self.flops_per_s, "source": self.source}


def device_peak(
    device: torch.device,
    precision: str,
    *,
    cache_file: Path | None,
    saved: dict[str, Any] | None = None,
    measure: Callable[[], float] | None = None,
    today: str | None = None,
) -> MatmulPeak:
    """This device's matmul peak (FLOP/s) at `precision`: the best of a measurement now, the
    machine's cached figure in `cache_file` and `saved` (a resumed run's header entry).

    A figure measured now that beats the cached one replaces it in the cache.
    `measure` and `today` are for tests (default: `matmul_peak`, the date).
    """
    measure = measure or (lambda: matmul_peak(device, PEAK_DTYPES[precision], repeats=PEAK_REPEATS))
    now = measure()
    candidates = [MatmulPeak(now, "measured now")]
    key = _machine_key(device, precision)
    cached = read_json_cache(cache_file).get(key) if cache_file is not None else None
    if cached:
        candidates.append(MatmulPeak(float(cached["flops_per_s"]), f"cached from {cached['measured']}"))
    if saved and saved.get("device") == str(device) and saved.get("precision") == precision:
        candidates.append(MatmulPeak(float(saved["flops_per_s"]), "kept from the run's start"))
    best = max(candidates, key=lambda c: c.flops_per_s)
    if cache_file is not None and (not cached or now > float(cached["flops_per_s"])):
        _write_cache(cache_file, key, now, today or datetime.date.today().isoformat())
    if best.source != "measured now":
        best.source += f"; measured now {now / 1e9:,.0f} GFLOP/s"
    return best


def _machine_key(device: torch.device, precision: str) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return f"{platform.node()} | {device.type} {name} | {precision} | {torch.get_num_threads()} threads"


def _write_cache(path: Path, key: str, flops_per_s: float, date: str) -> None:
    data = read_json_cache(path)
    data[key] = {"flops_per_s": flops_per_s, "measured": date}
    write_json_cache(path, data)


def step_flops_per_token(model, objective, window: torch.Tensor, runtime, build_meta) -> float:
    """Model matmul FLOPs per counted token of one micro-batch (forward + backward).

    `window` is a stand-in batch of the real shape (the loader is not touched,
    so data order is unchanged); RNG state is restored afterwards, so dropout
    draws are unchanged too.
    """
    with torch.random.fork_rng(devices=[]):
        tensors = objective.batch(window, (0, 0, 0))
        n_tokens, _ = objective.counts(tensors)
        tensors = tuple(t.to(runtime.device) for t in tensors)
        flops = training_step_flops(model, objective.loss, tensors, build_meta=build_meta, autocast=runtime.autocast())
    return flops / max(n_tokens, 1)


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory of this run so far: device allocations on CUDA, the process's peak RSS otherwise."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class RunMonitor:
    """Adds MFU, memory and ETA to metric records; optionally writes them to TensorBoard.

    `remeasure` (a fresh `device_peak`) is called when a step beats the peak
    (see the module docstring).
    """

    def __init__(
        self,
        *,
        device: torch.device,
        flops_per_token: float,
        peak_flops: float,
        total_steps: int,
        start_step: int,
        tensorboard_dir: Path | None = None,
        remeasure: Callable[[], float] | None = None,
    ) -> None:
        self.device = device
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.total_steps = total_steps
        self.start_step = start_step
        self.remeasure = remeasure
        self.t0 = time.perf_counter()
        self._writer = _tensorboard_writer(tensorboard_dir) if tensorboard_dir is not None else None

    def enrich(self, record: dict[str, Any]) -> dict[str, Any]:
        """Add speed and memory fields to a training record (which has step and tokens_per_s).

        When the step beat the peak, the record also gets `peak_flops_per_s` and
        `peak_source` ("re-measured", or "reached in training (a lower bound)").
        """
        step = record["step"]
        flops_per_s = record["tokens_per_s"] * self.flops_per_token
        if self.peak_flops > 0 and flops_per_s > self.peak_flops:
            self._raise_peak(flops_per_s, record)
        done = step - self.start_step
        pace = (time.perf_counter() - self.t0) / done if done > 0 else float("nan")
        record.update(
            flops_per_s=flops_per_s,
            mfu=flops_per_s / self.peak_flops if self.peak_flops > 0 else None,
            peak_mem_mib=round(peak_memory_mib(self.device), 1),
            eta_s=round(pace * (self.total_steps - step), 1),
        )
        return record

    def _raise_peak(self, flops_per_s: float, record: dict[str, Any]) -> None:
        again = self.remeasure() if self.remeasure is not None else 0.0
        if again >= flops_per_s:
            self.peak_flops, source = again, "re-measured"
        else:  # the step itself is the best evidence of what the device can do
            self.peak_flops, source = flops_per_s, "reached in training (a lower bound)"
        record.update(peak_flops_per_s=self.peak_flops, peak_source=source)

    def postfix(self, record: dict[str, Any]) -> dict[str, str]:
        """Short progress-bar fields (tqdm shows its own ETA; this one includes evaluation pauses)."""
        fields = {"tok/s": f"{record['tokens_per_s']:,.0f}"}
        if record.get("bytes_per_s"):
            fields["B/s"] = f"{record['bytes_per_s']:,.0f}"
        if record.get("mfu") is not None:
            fields["MFU"] = f"{100 * record['mfu']:.1f}%"
        fields["mem"] = f"{record['peak_mem_mib'] / 1024:.2f}G"
        return fields

    def write(self, record: dict[str, Any]) -> None:
        """Mirror a record's numbers to TensorBoard (training and validation records alike)."""
        if self._writer is None:
            return
        step = record["step"]
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(_tb_tag(key), value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _tb_tag(key: str) -> str:
    return f"val/{key}" if key.startswith("val_") else f"train/{key}"


def _tensorboard_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import (
            SummaryWriter,  # needs the tensorboard package
        )
    except ImportError:
        raise UserError(
            "train.tensorboard needs the `tensorboard` package: pip install stlm[tensorboard] (or turn the option off)"
        ) from None
    return SummaryWriter(log_dir=str(log_dir))
