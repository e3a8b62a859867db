"""What a running training job reports about its speed: MFU, peak memory, ETA, TensorBoard.

The loop measures tokens/s and bytes/s over each log interval; a `RunMonitor`
adds to every such record

    mfu           model matmul FLOPs per second / this device's measured matmul peak
    flops_per_s   model matmul FLOPs per second
    peak_mem_mib  peak RSS of the process on CPU, max_memory_allocated on CUDA
    eta_s         seconds left at this session's average pace (evaluation and saving included)

and, if asked, mirrors the scalars to TensorBoard. FLOPs per token come from
counting one step (`flops.training_step_flops`); the peak from one matmul
measurement at the start of a run, kept in the run's config.json so a resumed
run reuses it.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from stlm.errors import UserError
from stlm.training.flops import matmul_peak, training_step_flops

PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def device_peak(device: torch.device, precision: str, cached: dict[str, Any] | None) -> float:
    """The matmul peak (FLOP/s) for this device and precision: the cached figure when it is for the same ones."""
    if cached and cached.get("device") == str(device) and cached.get("precision") == precision:
        return float(cached["flops_per_s"])
    return matmul_peak(device, PEAK_DTYPES[precision])


def step_flops_per_token(model, task, window: torch.Tensor, runtime, build_meta) -> float:
    """Model matmul FLOPs per counted token of one micro-batch (forward + backward).

    `window` is a stand-in batch of the real shape (the loader is not touched,
    so data order is unchanged); RNG state is restored afterwards, so dropout
    draws are unchanged too.
    """
    with torch.random.fork_rng(devices=[]):
        tensors = task.batch(window, (0, 0, 0))
        n_tokens, _ = task.counts(tensors)
        tensors = tuple(t.to(runtime.device) for t in tensors)
        flops = training_step_flops(model, task.loss, tensors, build_meta=build_meta, autocast=runtime.autocast())
    return flops / max(n_tokens, 1)


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory of this run so far: device allocations on CUDA, the process's peak RSS otherwise."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class RunMonitor:
    """Adds MFU, memory and ETA to metric records; optionally writes them to TensorBoard."""

    def __init__(
        self,
        *,
        device: torch.device,
        flops_per_token: float,
        peak_flops: float,
        total_steps: int,
        start_step: int,
        tensorboard_dir: Path | None = None,
    ) -> None:
        self.device = device
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.total_steps = total_steps
        self.start_step = start_step
        self.t0 = time.perf_counter()
        self._writer = _tensorboard_writer(tensorboard_dir) if tensorboard_dir is not None else None

    def enrich(self, record: dict[str, Any]) -> dict[str, Any]:
        """Add speed and memory fields to a training record (which has step and tokens_per_s)."""
        step = record["step"]
        flops_per_s = record["tokens_per_s"] * self.flops_per_token
        done = step - self.start_step
        pace = (time.perf_counter() - self.t0) / done if done > 0 else float("nan")
        record.update(
            flops_per_s=flops_per_s,
            mfu=flops_per_s / self.peak_flops if self.peak_flops > 0 else None,
            peak_mem_mib=round(peak_memory_mib(self.device), 1),
            eta_s=round(pace * (self.total_steps - step), 1),
        )
        return record

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
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
    except ImportError:
        raise UserError(
            "train.tensorboard needs the `tensorboard` package: pip install stlm[tensorboard] (or turn the option off)"
        ) from None
    return SummaryWriter(log_dir=str(log_dir))
