"""Where and how the model runs: device, precision, threads, compilation, seeding.

Model code stays single-device and precision-agnostic; this is the one place
that decides:

    device          auto -> cuda, else mps, else cpu
    precision       fp32 | bf16 autocast | fp16 autocast with a gradient scaler
                    (auto: bf16 on CUDA when supported; on a CPU, what a short measured
                    probe of bf16 against fp32 matmuls picks, cached per machine: see
                    `cpu_auto_precision`; fp32 elsewhere)
    quantize        none | int8: weights of the model's Linear layers stored in int8 for CPU
                    inference (applied by the family, `ModelFamily.quantize`); activations fp32
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
import datetime
import functools
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from stlm.config import RuntimeConfig
from stlm.errors import UserError
from stlm.version import __version__

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
QUANTIZE = ("none", "int8")


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # resolved: fp32 | bf16 | fp16
    compile: bool = False
    activation_checkpointing: bool = False
    allocator: str = "default"
    scaler: torch.amp.GradScaler | None = field(default=None, compare=False)
    precision_note: str = ""  # how `auto` chose, for the run header: "auto: bf16 matmuls 0.10x fp32's speed, ..."
    quantize: str = "none"  # none | int8 (weights of Linear layers, CPU inference)

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
        precision = f"{self.precision} ({self.precision_note})" if self.precision_note else self.precision
        if self.quantize != "none":
            extras.append(f"{self.quantize} weights")
        return ", ".join([name, precision, *extras])


def resolve_runtime(
    cfg: RuntimeConfig,
    *,
    purpose: str = "train",
    quantize: str = "none",
    probe_cache: Path | Literal["default"] | None = "default",
) -> Runtime:
    """The runtime for `cfg`. purpose (train | generate) picks the probe shapes `auto` judges
    by on a CPU; quantize (none | int8) is for inference and keeps activations in fp32.
    probe_cache: where the CPU precision probe's result is kept (default: the user cache
    folder; None measures without keeping it)."""
    quantize = check_quantize(quantize)
    if cfg.threads:
        torch.set_num_threads(clamp_threads(cfg.threads))
    device = _resolve_device(cfg.device)
    precision, note = cfg.precision, ""
    if quantize != "none":
        if device.type != "cpu":
            raise UserError(f"--quantize {quantize} runs on the CPU (torch's int8 CPU kernels); use --device cpu")
        if precision not in ("auto", "fp32"):
            raise UserError(f"--quantize {quantize} keeps activations in fp32; drop --precision {precision}")
        precision = "fp32"
    if precision == "auto":
        if device.type == "cpu":
            # Some CPUs multiply bf16 in hardware (AMX), most emulate it slowly: measure, not guess.
            precision, note = cpu_auto_precision(purpose, cache_file=_probe_file(probe_cache))
        else:
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
        precision_note=note,
        quantize=quantize,
    )


def decoding_runtime(
    cfg: RuntimeConfig, runtime: Runtime, *, probe_cache: Path | Literal["default"] | None = "default"
) -> Runtime:
    """The runtime a training run generates text with (fine-tuning's validation and test answers).

    On a CPU `auto` is decided per purpose: the train-shaped probe can pick bf16
    (AMX) where one-token decode steps, small matmuls, run faster in fp32. So a
    run resolved with `auto` on a CPU generates in the generate-shaped probe's
    precision, as `stlm generate` does. Any set precision, and every other
    device, generates as it trains: `runtime` itself.
    """
    if cfg.precision != "auto" or runtime.device.type != "cpu" or runtime.quantize != "none":
        return runtime
    precision, note = cpu_auto_precision("generate", cache_file=_probe_file(probe_cache))
    return replace(runtime, precision=precision, precision_note=note, scaler=None)


def _probe_file(probe_cache: Path | Literal["default"] | None) -> Path | None:
    """Where the CPU precision probe is kept: the user cache folder's file for "default"."""
    return cache_folder() / PROBE_CACHE if probe_cache == "default" else probe_cache


def describe_training(runtime: Runtime, decoding: Runtime) -> str:
    """The run header's device line of a run that trains with `runtime` and generates with
    `decoding` (`decoding_runtime`): the answers' precision is named where it differs."""
    if decoding.precision == runtime.precision:
        return runtime.describe()
    return f"{runtime.describe()}, answers generated in {decoding.precision}"


def check_quantize(quantize: str | None) -> str:
    """`quantize` as one of QUANTIZE (None is none), else a UserError naming the choices."""
    quantize = "none" if quantize is None else quantize
    if quantize not in QUANTIZE:
        raise UserError(f"unknown quantize {quantize!r}; use one of {', '.join(QUANTIZE)}")
    return quantize


# --- precision auto on a CPU: a measured probe ----------------------------------------------------

PROBE_CACHE = "precision_probe.json"  # in the user cache folder: {machine key: {purpose: {...}}}
# bf16 autocast casts weights and activations around every matmul and rounds to 8 mantissa
# bits: it has to beat fp32 clearly, not by noise, to be chosen.
BF16_MIN_SPEEDUP = 1.25
# (rows, in, out) of the probe's matmuls, shaped like the models': a training micro-batch of
# tokens through a 512-wide layer and its MLP, and decoding's single row through the same.
PROBE_SHAPES = {"train": ((512, 512, 1536), (512, 1536, 512)), "generate": ((1, 512, 1536), (1, 1536, 512))}
PROBE_CALLS = {"train": 1, "generate": 64}  # matmuls per timed trial: one decoding row alone is too short to time
PROBE_TRIALS = 3  # timed trials after one warm-up; the fastest counts


def choose_precision(fp32_s: float, bf16_s: float) -> str:
    """bf16 when its probe ran at least BF16_MIN_SPEEDUP times faster than fp32's, else fp32."""
    return "bf16" if bf16_s > 0 and fp32_s >= BF16_MIN_SPEEDUP * bf16_s else "fp32"


def cpu_auto_precision(
    purpose: str,
    *,
    cache_file: Path | None,
    measure: Callable[[str, torch.dtype], float] | None = None,
    key: str | None = None,
    today: str | None = None,
) -> tuple[str, str]:
    """What `--precision auto` means on this CPU for `purpose` (train | generate), and a note saying why.

    The probe times the shapes of PROBE_SHAPES[purpose] in fp32 and under bf16 autocast
    (seconds per trial, the fastest of PROBE_TRIALS) and `choose_precision` decides. The
    timings are kept in `cache_file` under this machine's key (CPU model and torch version:
    what decides bf16's speed), so each machine measures once; delete the file to measure
    again. `measure(purpose, dtype)`, `key` and `today` are for tests.
    """
    if purpose not in PROBE_SHAPES:
        raise ValueError(f"probe purpose must be one of {', '.join(PROBE_SHAPES)}, got {purpose!r}")
    key = key or machine_key()
    cached = (read_json_cache(cache_file).get(key) or {}).get(purpose) if cache_file is not None else None
    try:
        fp32_s, bf16_s, date = float(cached["fp32_s"]), float(cached["bf16_s"]), str(cached["measured"])
        source = f"probe cached {date}"
    except (TypeError, KeyError, ValueError):  # none yet, or a damaged entry: measure afresh
        measure = measure or _probe_seconds
        fp32_s, bf16_s = measure(purpose, torch.float32), measure(purpose, torch.bfloat16)
        date, source = today or datetime.date.today().isoformat(), "probe measured now"
        if cache_file is not None:
            data = read_json_cache(cache_file)
            entry = data.get(key) if isinstance(data.get(key), dict) else {}
            entry[purpose] = {"fp32_s": fp32_s, "bf16_s": bf16_s, "measured": date}
            data[key] = entry
            write_json_cache(cache_file, data)
    speed = fp32_s / bf16_s if bf16_s > 0 else 0.0
    return choose_precision(fp32_s, bf16_s), f"auto: bf16 matmuls {speed:.2f}x fp32's speed, {source}"


def machine_key() -> str:
    """What bf16's speed depends on: the CPU model and the torch build."""
    return f"{cpu_model()} | torch {torch.__version__}"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def cache_folder() -> Path:
    """stlm's per-user cache folder (the same one `stlm.data` keeps corpora in)."""
    import platformdirs  # a core dependency, imported when first needed

    return Path(platformdirs.user_cache_dir("stlm"))


def _probe_seconds(purpose: str, dtype: torch.dtype) -> float:
    """Seconds per trial of the purpose's matmuls, fp32 inputs as the model has them; bf16 runs
    under autocast, so the casts it adds are paid as they would be."""
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(r, i, generator=g), torch.randn(i, o, generator=g)) for r, i, o in PROBE_SHAPES[purpose]]
    autocast = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    def trial() -> None:
        for _ in range(PROBE_CALLS[purpose]):
            for a, b in pairs:
                a @ b

    with torch.inference_mode(), autocast:
        return fastest_seconds(trial, trials=PROBE_TRIALS, warmups=1)


def fastest_seconds(
    work: Callable[[], object], *, trials: int, warmups: int, sync: Callable[[], object] = lambda: None
) -> float:
    """Seconds of the fastest of `trials` timed calls of `work`, after `warmups` untimed ones.

    The fastest, not the median: interference (another job's threads taking the cores) only ever
    makes a call slower. `sync` runs before and after each call (an accelerator's queue drained,
    so the clock times the work and not its launch).
    """
    best = float("inf")
    for i in range(warmups + trials):
        sync()
        t0 = time.perf_counter()
        work()
        sync()
        if i >= warmups:
            best = min(best, time.perf_counter() - t0)
    return best


def read_json_cache(path: Path) -> dict[str, Any]:
    """A per-machine measurement cache (a JSON object); {} when absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent or unreadable: measured afresh and rewritten
    return data if isinstance(data, dict) else {}


def write_json_cache(path: Path, data: dict[str, Any]) -> None:
    """Replace a measurement cache atomically; a read-only folder only costs a measurement next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache folder costs a measurement next time, nothing more


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
