"""Shared primitives: fp32 norm, rotary offsets, attention with and without a KV cache."""

from __future__ import annotations

import pytest
import torch

from stlm.models.layers import CausalSelfAttention, KVCache, RMSNorm, RotaryEmbedding, SwiGLU


def test_rmsnorm_computes_in_fp32_and_keeps_dtype():
    torch.manual_seed(0)
    norm = RMSNorm(64, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64) * 100
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), ref)
    y = norm(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, atol=0.05, rtol=0.02)


def test_rotary_offset_matches_slice_of_full_rotation_and_keeps_norm():
    rotary = RotaryEmbedding(d_head=16, max_seq_len=32)
    x = torch.randn(2, 10, 3, 16)  # (B, T, H, Dh)
    full = rotary(x)
    torch.testing.assert_close(rotary(x[:, 4:7], offset=4), full[:, 4:7])
    torch.testing.assert_close(full.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(full[:, 0], x[:, 0])  # position 0 is the identity rotation
    with pytest.raises(ValueError, match="max_seq_len"):
        rotary(x, offset=25)


def test_rotary_scores_depend_only_on_relative_position():
    rotary = RotaryEmbedding(d_head=8, max_seq_len=64)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    score = lambda i, j: (rotary(q, offset=i) * rotary(k, offset=j)).sum()  # noqa: E731
    torch.testing.assert_close(score(3, 1), score(40, 38))


def test_rotary_tables_stay_out_of_the_state_dict():
    assert RotaryEmbedding(8, 16).state_dict() == {}


def test_swiglu_shapes_and_no_bias():
    mlp = SwiGLU(32, 96)
    assert mlp(torch.randn(2, 5, 32)).shape == (2, 5, 32)
    assert all(p.ndim == 2 for p in mlp.parameters())


@pytest.mark.parametrize("splits", [[12], [5, 1, 1, 1, 1, 1, 1, 1], [4, 5, 1, 2], [1] * 12])
def test_attention_with_cache_equals_full(splits):
    torch.manual_seed(0)
    attn = CausalSelfAttention(d_model=32, n_heads=4)
    rotary = RotaryEmbedding(8, 64)
    x = torch.randn(2, 12, 32)
    full = attn(x, rotary)
    cache = KVCache(1, 2, 4, 16, 8)
    outs, start = [], 0
    for n in splits:
        outs.append(attn(x[:, start : start + n], rotary, cache, 0))
        cache.advance(n)
        start += n
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_refuses_to_overflow():
    cache = KVCache(1, 1, 2, 4, 8)
    cache.store(0, torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8))
    cache.advance(3)
    with pytest.raises(ValueError, match="KV cache full"):
        cache.store(0, torch.randn(1, 2, 2, 8), torch.randn(1, 2, 2, 8))
    cache.reset()
    assert cache.length == 0
