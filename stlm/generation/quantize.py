"""int8 weights for CPU inference: the matmuls of cached decoding read a quarter of the bytes.

At batch 1 a decoding step multiplies one row by every matrix of the model, so
an fp32 model streams all its weights from memory once per token and the CPU
waits on memory, not arithmetic. With the weights stored as int8 (one scale per
output channel) and each activation row quantized on the fly per call (dynamic
quantization), the same matmuls read 4x fewer bytes and run on the CPU's int8
dot-product instructions; accumulation is int32, the output fp32.

Which implementation: measured on this project's machines (2-core Xeon, no
AMX, torch 2.13; docs/generation-speed.md has the numbers), torch's dynamic
quantized Linear (`torch.ao.nn.quantized.dynamic.Linear`, fbgemm kernels) was
the fastest; torchao's int8 configurations (weight-only, and dynamic int8
activations) were slower than plain fp32 in eager mode, and compiling a
decoding step for every cache length costs more than it saves for a short
generation. `torch.ao.quantization` is deprecated in favour of torchao; the
warning is silenced here, and `quantize_linear_int8` is the one place to change
when torchao's CPU path overtakes it.

Embeddings stay fp32 (a lookup reads one row per token, nothing to gain). A
model whose output head is tied to the embedding gets its own head first (the
family does that: `ModelFamily.quantize`), so the largest matmul of a small
model is quantized too.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """Replace every `nn.Linear` of `model` (in place) by a dynamic int8 Linear; returns the model.

    Per-channel weight scales: one per output row, so a row of small weights is not
    rounded with the scale of the largest one (per-tensor scales cost ~3x the error).
    CPU only; the model is put in eval mode (the quantized layers have no gradients).
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 quantization needs the model on the CPU")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notes (see the module docstring)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        model.eval()
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)


def count_int8_linears(model: nn.Module) -> int:
    """How many Linear layers of `model` hold int8 weights."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(isinstance(m, DynamicLinear) for m in model.modules())
