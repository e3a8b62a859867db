"""Hand-written backward passes for two elementwise blocks that autograd makes wasteful.

Autograd differentiates the rotary rotation and the SwiGLU gate op by op: each
`chunk` becomes a `cat` in the backward pass, every product keeps its inputs
alive, and a dozen small kernels run where four would do. On CPU, where these
kernels are memory-bound and not hidden behind matmuls, that is several
percent of a training step. Each function below writes its output and its
input gradient in place into one preallocated tensor (`out=` into the two
halves), so no `cat`, no extra temporaries. Same numbers as the op-by-op
formulas (tests compare values and gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class RotateHalf(torch.autograd.Function):
    """Rotary rotation in the half-split layout: dims i and i + Dh/2 form a pair.

    y1 = x1 * cos - x2 * sin        dx1 =  g1 * cos + g2 * sin
    y2 = x2 * cos + x1 * sin        dx2 = -g1 * sin + g2 * cos
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x (B, T, H, Dh), any strides; cos, sin broadcastable to (B, T, H, Dh/2) and of x's dtype.
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin, sign=1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, sin, sign=-1.0), None, None  # the inverse rotation


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    if torch.compiler.is_compiling():
        # Inductor fuses the plain formula into one kernel itself, and its dynamic-shape
        # tracing (a batch width that changes between steps) fails on `out=` into views.
        return torch.cat((x1 * cos - sign * (x2 * sin), x2 * cos + sign * (x1 * sin)), dim=-1)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # (B, T, H, Dh), contiguous
    o1, o2 = out[..., :half], out[..., half:]
    torch.mul(x1, cos, out=o1)
    o1.addcmul_(x2, sin, value=-sign)
    torch.mul(x2, cos, out=o2)
    o2.addcmul_(x1, sin, value=sign)
    return out


def rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, Dh) rotated by angles whose cos and sin are (T, 1, Dh/2)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return RotateHalf.apply(x, cos, sin)
    return _rotate(x, cos, sin, sign=1.0)


class SiluGate(torch.autograd.Function):
    """silu(gate) * up from the fused (..., 2F) projection; the gradient lands in one (..., 2F) tensor.

    h = silu(a) * u        da = g * u * silu'(a)        du = g * silu(a)
    """

    @staticmethod
    def forward(ctx, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        ctx.save_for_backward(gate_up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (gate_up,) = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        if torch.compiler.is_compiling():  # as in _rotate: no `out=` into views under inductor
            return torch.cat((torch.ops.aten.silu_backward(grad * up, gate), grad * F.silu(gate)), dim=-1)
        d = torch.empty_like(gate_up)  # (..., 2F)
        d_gate, d_up = d.chunk(2, dim=-1)
        torch.mul(grad, F.silu(gate), out=d_up)
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=d_gate)
        return d


def silu_gate(gate_up: torch.Tensor) -> torch.Tensor:
    """(..., 2F) -> (..., F): silu of the first half times the second half."""
    if torch.is_grad_enabled() and gate_up.requires_grad:
        return SiluGate.apply(gate_up)
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up
