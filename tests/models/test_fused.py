"""The fused rotary and SwiGLU ops equal their op-by-op formulas, values and gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stlm.models.fused import rotate_half, silu_gate


def _rotate_reference(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def _silu_gate_reference(gu):
    gate, up = gu.chunk(2, dim=-1)
    return F.silu(gate) * up


def test_rotate_half_matches_reference_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 5, 3, 4, 8, generator=g, dtype=torch.float64)  # strided q view, as in attention
    angles = torch.randn(5, 1, 4, generator=g, dtype=torch.float64)
    cos, sin = angles.cos(), angles.sin()
    grad = torch.randn(2, 5, 4, 8, generator=g, dtype=torch.float64)
    outs, grads = [], []
    for fn in (rotate_half, _rotate_reference):
        x = qkv.clone().requires_grad_()
        y = fn(x[:, :, 0], cos, sin)
        y.backward(grad)
        outs.append(y.detach())
        grads.append(x.grad)
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1])
    with torch.no_grad():
        torch.testing.assert_close(rotate_half(qkv[:, :, 0], cos, sin), outs[1])


def test_silu_gate_matches_reference_values_and_gradients():
    g = torch.Generator().manual_seed(1)
    gu = torch.randn(3, 7, 12, generator=g, dtype=torch.float64)
    grad = torch.randn(3, 7, 6, generator=g, dtype=torch.float64)
    outs, grads = [], []
    for fn in (silu_gate, _silu_gate_reference):
        x = gu.clone().requires_grad_()
        y = fn(x)
        y.backward(grad)
        outs.append(y.detach())
        grads.append(x.grad)
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1])
    assert torch.autograd.gradcheck(silu_gate, (gu[:1, :2].clone().requires_grad_(),))


def test_the_path_taken_under_torch_compile_gives_the_same_values_and_gradients(monkeypatch):
    # Under torch.compile the ops use plain formulas (inductor's dynamic shapes fail on `out=` into views).
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 5, 4, 8, generator=g, dtype=torch.float64)
    angles = torch.randn(5, 1, 4, generator=g, dtype=torch.float64)
    gu0 = torch.randn(3, 7, 12, generator=g, dtype=torch.float64)
    results = []
    for compiling in (False, True):
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda c=compiling: c)
        x, gu = x0.clone().requires_grad_(), gu0.clone().requires_grad_()
        y, h = rotate_half(x, angles.cos(), angles.sin()), silu_gate(gu)
        (y.pow(2).sum() + h.pow(3).sum()).backward()
        results.append((y.detach(), h.detach(), x.grad, gu.grad))
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager)
