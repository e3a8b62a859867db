"""Model FLOPs of a training step and the device's own matmul peak: the two halves of MFU.

    MFU = model FLOPs per step * steps per second / measured matmul peak

Model FLOPs are counted, not estimated: one forward and backward pass runs
under torch's `FlopCounterMode`, which adds up the FLOPs of every matmul it
dispatches (mm, bmm, addmm, scaled_dot_product_attention, ...) from their
actual shapes. This is exact for every family, T5 included (where the
6 x params x tokens rule overstates by 1.7-2x: shared embeddings, short
decoders, relative position buckets). Elementwise work (norms, softmax,
the optimizer) is not counted, as usual for MFU. Attention is counted as
SDPA's full T x T product even when causal, as the counter does: forward
QK^T and AV; backward twice that when autograd differentiates the plain
products (the meta device, the math kernel) and 2.5 times that for the fused
kernels, which recompute the scores.

The count runs on the meta device when the model allows it (no memory, no
time); a model with data-dependent shapes (pooled patches) is counted on the
real device with one real batch instead.

For a decoder the count equals, to within the attention term, the familiar
6 * N_matmul * tokens + 12 * layers * T * D * tokens (forward + backward;
N_matmul = parameters in matmuls, the LM head included, the embedding lookup not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from stlm.evaluation.flops import count_flops  # the one FLOP counter (CPU flash attention included)
from stlm.runtime import fastest_seconds

# The matmul size of the peak measurement: big enough to reach the kernels'
# steady state on a CPU, small enough to take well under a second.
PEAK_SIZE = 1024


def training_step_flops(
    model: torch.nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    tensors: tuple[torch.Tensor, ...],
    *,
    build_meta: Callable[[], torch.nn.Module] | None = None,
    autocast: Any = None,
) -> int:
    """Matmul FLOPs of one forward + backward of `loss_fn(model, *tensors)`.

    With `build_meta` (a function that builds the same network), the pass runs
    on a meta-device copy: free, and the real model's gradients are untouched.
    If that fails (data-dependent shapes), the real model runs one pass on the
    real tensors and its gradients are cleared afterwards.
    """
    import contextlib

    autocast = autocast if autocast is not None else contextlib.nullcontext()
    if build_meta is not None:
        try:
            with torch.device("meta"):
                meta_model = build_meta()
            meta_model.train(model.training)
            meta_tensors = tuple(t.to("meta") for t in tensors)
            return count_flops(lambda: loss_fn(meta_model, *meta_tensors).backward())
        except Exception:
            pass

    def real_pass() -> None:
        with autocast:
            loss = loss_fn(model, *tensors)
        loss.backward()

    try:
        return count_flops(real_pass)
    finally:
        model.zero_grad(set_to_none=True)


def matmul_peak(
    device: torch.device, dtype: torch.dtype = torch.float32, *, size: int = PEAK_SIZE, repeats: int = 5
) -> float:
    """The device's measured matmul rate in FLOP/s: the best of `repeats` (size x size) @ (size x size).

    The best, not the median: a peak is what the hardware can do when nothing
    else is running, and interference only ever makes a repetition slower.
    """
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    flops = 2 * size**3
    return flops / fastest_seconds(lambda: a @ b, trials=repeats, warmups=2, sync=lambda: _sync(device))


def mfu(flops_per_s: float, peak_flops_per_s: float) -> float:
    return flops_per_s / peak_flops_per_s if peak_flops_per_s > 0 else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
