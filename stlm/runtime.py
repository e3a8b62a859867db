"""Where and how the model runs: device, precision, threads, compilation, seeding.

Model code stays single-device and precision-agnostic; this is the one place
that decides:

    device          auto -> cuda, else mps, else cpu
    precision       fp32 | bf16 autocast | fp16 autocast with a gradient scaler
                    (auto: bf16 on CUDA when supported, fp32 elsewhere)
    TF32            fp32 matmuls on CUDA tensor cores (runtime.tf32)
    threads         torch's intra-op threads on CPU (runtime.threads, at most the machine's CPUs)
    memory          a model whose fp32 weights alone exceed the machine's memory is refused
                    before it is built (`check_model_fits`)
    allocator       CPU on Linux: freed activation memory kept for the next step
    model           optional activation checkpointing of every block, then optional torch.compile

The training step (`stlm.training.step`) calls `prepare_model` once, and
`backward` / `unscale` / `step` (or `skip`) each step: with fp32 and bf16 the
scaler is disabled and those are plain calls.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import random
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stlm.config import RuntimeConfig
from stlm.errors import UserError
from stlm.version import __version__

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # resolved: fp32 | bf16 | fp16
    compile: bool = False
    activation_checkpointing: bool = False
    allocator: str = "default"
    scaler: torch.amp.GradScaler | None = field(default=None, compare=False)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 / fp16 autocast around forward passes; a no-op in fp32."""
        if self.precision in _AUTOCAST_DTYPES:
            return torch.autocast(device_type=self.device.type, dtype=_AUTOCAST_DTYPES[self.precision])
        return contextlib.nullcontext()

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Apply activation checkpointing and torch.compile as configured; the same module is returned.

        `nn.Module.compile` compiles in place, so parameter names and the state
        dict (and so checkpoints) are those of the plain model.
        """
        if self.activation_checkpointing:
            checkpoint_blocks(model)
        if self.compile:
            model.compile()
        return model

    def backward(self, loss: torch.Tensor) -> None:
        """loss.backward(), scaled first under fp16 so small gradients do not underflow."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide fp16-scaled gradients back before anything reads them (clipping, norms)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step(); under fp16 the scaler skips steps with inf/NaN gradients and adapts its scale."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def skip(self, optimizer: torch.optim.Optimizer) -> None:
        """A step not taken (a non-finite loss): under fp16 the scaler still updates, which lowers
        its scale after inf/NaN gradients and clears this step's `unscale`."""
        if self.scaler is not None:
            self.scaler.update()

    def eager(self) -> contextlib.AbstractContextManager:
        """Around evaluation: a compiled model runs uncompiled. Evaluation's shapes (a last partial
        batch, decoding one token at a time into a growing cache) differ from the training step's,
        and compiling each of them costs more than the little evaluation time it would save."""
        if self.compile:
            return torch.compiler.set_stance("force_eager")
        return contextlib.nullcontext()

    def describe(self) -> str:
        name = str(self.device)
        if self.device.type == "cuda":
            name += f" ({torch.cuda.get_device_name(self.device)})"
        elif self.device.type == "cpu":
            name += f" ({torch.get_num_threads()} threads)"
        extras = [
            x
            for x, on in (("compiled", self.compile), ("activation checkpointing", self.activation_checkpointing))
            if on
        ]
        return ", ".join([name, self.precision, *extras])


def resolve_runtime(cfg: RuntimeConfig) -> Runtime:
    if cfg.threads:
        torch.set_num_threads(clamp_threads(cfg.threads))
    device = _resolve_device(cfg.device)
    precision = cfg.precision
    if precision == "auto":
        # On CPU bf16 autocast pays only for wide matmuls; tiny models run faster in fp32.
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        precision = "bf16" if cuda_bf16 else "fp32"
    if precision == "fp16" and device.type not in ("cuda", "cpu"):
        raise UserError(
            f"fp16 training needs a gradient scaler, which {device.type} lacks; use --precision bf16 or fp32"
        )
    if device.type == "cuda":
        # TF32 tensor cores for fp32 matmuls and convolutions: ~8x the fp32 rate, 10-bit mantissa inputs.
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    allocator = tune_cpu_allocator() if cfg.tune_malloc and device.type == "cpu" else "default"
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return Runtime(
        device=device,
        precision=precision,
        compile=cfg.compile,
        activation_checkpointing=cfg.activation_checkpointing,
        allocator=allocator,
        scaler=scaler,
    )


def block_lists(model: nn.Module) -> list[nn.ModuleList]:
    """The model's stacks of repeated blocks: every ModuleList of two or more same-class modules with weights.

    Found by structure, not by name, so every family (decoder blocks, T5's
    encoder and decoder stacks, the pooled model's local and core stacks) is
    covered without the model knowing about checkpointing.
    """
    found = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) >= 2:
            kinds = {type(child) for child in module}
            if len(kinds) == 1 and any(p.requires_grad for p in module.parameters()):
                found.append(module)
    return found


def checkpoint_blocks(model: nn.Module) -> int:
    """Wrap each block's forward in `torch.utils.checkpoint`; returns how many blocks were wrapped.

    In training with gradients on, a block keeps only its inputs and
    recomputes its activations during backward (same values: RNG state is
    restored for the recomputation). Evaluation and decoding are unchanged.
    """
    from torch.utils.checkpoint import checkpoint

    lists = block_lists(model)
    if not lists:
        raise UserError(f"activation checkpointing found no stack of repeated blocks in {type(model).__name__}")
    wrapped = 0
    for blocks in lists:
        for block in blocks:
            if getattr(block, "_stlm_checkpointed", False):
                continue
            plain = block.forward

            @functools.wraps(plain)
            def forward(*args, _plain=plain, _block=block, **kwargs):
                if _block.training and torch.is_grad_enabled():
                    return checkpoint(_plain, *args, use_reentrant=False, **kwargs)
                return _plain(*args, **kwargs)

            block.forward = forward
            block._stlm_checkpointed = True
            wrapped += 1
    return wrapped


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def clamp_threads(threads: int) -> int:
    """`threads`, at most the machine's CPU count (with a note when lowered): OpenMP crashes
    outright on absurd counts, and more threads than CPUs only slows torch down."""
    available = cpu_count()
    if threads > available:
        print(
            f"note: runtime.threads {threads} is more than this machine's {available} CPUs; using {available}",
            file=sys.stderr,
        )
        return available
    return threads


def machine_memory() -> int | None:
    """Physical memory in bytes, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


FP32_BYTES = 4


def check_model_fits(n_params: int, what: str) -> None:
    """A UserError when `n_params` fp32 weights alone exceed the machine's memory.

    Called before a model is built: allocating such a model would swap the machine to a halt
    or be killed. Weights are a lower bound (training adds gradients and optimizer state), so
    a refusal here is never wrong."""
    memory = machine_memory()
    need = n_params * FP32_BYTES
    if memory is not None and need > memory:
        raise UserError(
            f"{what} has {n_params:,} parameters, {need / 1e9:,.1f} GB of fp32 weights, more than this "
            f"machine's {memory / 1e9:,.1f} GB of memory; choose a smaller model"
        )


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' requested but MPS is not available; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# glibc mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_MAX.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def tune_cpu_allocator() -> str:
    """Keep freed activation buffers in the process instead of returning them to the OS.

    A training step allocates and frees the same large activation buffers every
    step. glibc serves large requests with fresh mmap calls and trims freed
    memory back to the OS, so every step pays page faults and zeroing for
    memory it just gave away. Turning both off (the mallopt equivalent of
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>) makes the heap settle at
    the step's peak and reuse it. Process-wide; glibc (Linux) only.
    Returns what was done, for the run header.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux":
        return "unchanged (not Linux)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "unchanged (no glibc mallopt)"
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    return "glibc: mmap off, trim threshold 1 GiB" if ok else "unchanged (mallopt refused)"


def run_header(runtime_description: str) -> dict[str, Any]:
    """Code version, package versions and device, recorded with every run."""
    versions = {"python": platform.python_version(), "stlm": __version__, "torch": torch.__version__}
    for name in ("numpy", "safetensors"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "git_commit": _git_commit(),
        "versions": versions,
        "device": runtime_description,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
