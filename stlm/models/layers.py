"""Shared building blocks of the model families: norm, rotary, gated MLP, attention.

Only primitives that more than one family uses live here; a family's key idea
(pooling, relative position buckets) lives in that family's own files. All
linear layers are bias-free, as in PaLM and Llama: biases add parameters,
optimizer state and extra elementwise passes for no reported gain.

Shape notation: B batch, T tokens, D width, H heads, Dh = D / H (per-head width),
F feed-forward hidden width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stlm.models.fused import rotate_half, silu_gate


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain and no bias or mean subtraction.

    Computed in fp32 whatever the input dtype: a mean of squares over a wide
    row accumulated with bf16's 8-bit mantissa is visibly off, and the norm is
    cheap next to the matmuls around it. The result is cast back so the caller's dtype is kept.
    """

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return y.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer) in the half-split layout.

    Dimension i of a head is rotated together with dimension i + Dh/2 (the
    GPT-NeoX / Llama layout) rather than interleaved pairs: two contiguous
    halves are plain slices, with no gather of every other element.

    cos/sin tables for every position up to `max_seq_len` are computed once.
    They are non-persistent buffers: they follow `.to(device)` but stay out of
    the state dict, since they are a pure function of the config. After a model
    built on the meta device is materialised, `reset_parameters` refills them.
    """

    def __init__(self, d_head: int, max_seq_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        if d_head % 2:
            raise ValueError(f"rotary embedding needs an even head width, got {d_head}")
        self.d_head = d_head
        self.max_seq_len = max_seq_len
        self.theta = theta
        self.register_buffer("cos", torch.empty(max_seq_len, d_head // 2), persistent=False)
        self.register_buffer("sin", torch.empty(max_seq_len, d_head // 2), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Tables in fp32 always: bf16 angles at position ~1000 are off by whole radians.
        device = self.cos.device
        half = self.d_head // 2
        inv_freq = self.theta ** -(torch.arange(half, device=device, dtype=torch.float32) / half)  # (Dh/2,)
        positions = torch.arange(self.max_seq_len, device=device, dtype=torch.float32)  # (T_max,)
        angles = torch.outer(positions, inv_freq)  # (T_max, Dh/2)
        self.cos = angles.cos()
        self.sin = angles.sin()

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Rotate x (B, T, H, Dh) as if its first token sat at position `offset`.

        The offset is what makes cached decoding right: a token appended to a
        cache of length n is rotated for position n, not position 0.
        """
        t = x.shape[1]
        if offset + t > self.max_seq_len:
            raise ValueError(f"positions {offset}..{offset + t - 1} exceed max_seq_len {self.max_seq_len}")
        # Cast to x's dtype so bf16 activations are not promoted to fp32 by the multiply.
        cos = self.cos[offset : offset + t, None, :].to(x.dtype)  # (T, 1, Dh/2), broadcast over B and H
        sin = self.sin[offset : offset + t, None, :].to(x.dtype)  # (T, 1, Dh/2)
        # (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) over the halves, as one fused op.
        return rotate_half(x, cos, sin)  # (B, T, H, Dh)

    def rotate_rows(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate x (B, T, H, Dh) with each row at its own positions, long (B, T).

        The same table entries and arithmetic as `forward`: a row rotated here
        equals that row rotated alone with `offset` = its first position.
        The caller checks that positions are below max_seq_len.
        """
        cos = self.cos[positions][:, :, None, :].to(x.dtype)  # (B, T, 1, Dh/2), broadcast over H
        sin = self.sin[positions][:, :, None, :].to(x.dtype)  # (B, T, 1, Dh/2)
        return rotate_half(x, cos, sin)  # (B, T, H, Dh)


class SwiGLU(nn.Module):
    """Gated feed-forward: down(silu(gate(x)) * up(x)) (Shazeer 2020).

    Gate and up projections are one (D, 2F) matmul: one kernel call instead of
    two, which matters on CPU where small matmuls are overhead-bound.
    """

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # silu(gate) * up over the two halves of one (B, T, 2F) projection, as one fused op.
        return self.down(silu_gate(self.gate_up(x)))  # (B, T, 2F) -> (B, T, F) -> (B, T, D)


class MultiTokenHeads(nn.Module):
    """The extra heads of multi-token prediction (Gloeckle et al. 2024) on a trunk's last hidden state.

    Head k (k = 2..K) predicts the id k positions ahead. Each is one residual
    pre-norm SwiGLU of width D on the shared trunk output; the model then applies
    its own final norm and its (tied) unembedding to every head, so a head costs
    3*D*D + D parameters and no vocabulary table (cheap on 264 bytes):

        x (B, T, D) -> x + SwiGLU_k(RMSNorm_k(x)) for each extra head   (B, T, K-1, D)

    The next-id head is the model's own: these heads never change its logits.
    """

    def __init__(self, d_model: int, n_extra: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norms = nn.ModuleList(RMSNorm(d_model, eps) for _ in range(n_extra))
        self.mlps = nn.ModuleList(SwiGLU(d_model, d_model) for _ in range(n_extra))

    @staticmethod
    def count(d_model: int, n_extra: int) -> int:
        """Exact parameters of `MultiTokenHeads(d_model, n_extra)`: per head a norm gain and a SwiGLU of width D."""
        return n_extra * (d_model + 3 * d_model * d_model)

    def reset_parameters(self, std: float, residual_std: float) -> None:
        for norm, mlp in zip(self.norms, self.mlps):
            norm.reset_parameters()
            nn.init.normal_(mlp.gate_up.weight, std=std)
            nn.init.normal_(mlp.down.weight, std=residual_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, K-1, D), the hidden state each extra head reads out."""
        return torch.stack([x + mlp(norm(x)) for norm, mlp in zip(self.norms, self.mlps)], dim=2)


class RowPositions:
    """Where the new tokens of each row sit when the rows of a batch are at different positions.

    Batched generation feeds prompts of different lengths together: row b's T
    new tokens take positions start[b] .. start[b] + T - 1 and the KV-cache
    slots of the same numbers, so a row's keys, rotations and mask are those
    it would have alone. Built once per forward call and shared by the layers.

        start  long (B,)        position of each row's first new token
        slots  long (B, T)      start[:, None] + 0..T-1
        end    int              max(start) + T: the cache slots attention reads
        mask   bool (B, 1, T, end)  query t of row b may see slots 0..start[b] + t
    """

    def __init__(self, start: torch.Tensor, t: int) -> None:
        self.start = start
        self.slots = start[:, None] + torch.arange(t, device=start.device)  # (B, T)
        self.end = int(start.max()) + t
        keys = torch.arange(self.end, device=start.device)  # (end,)
        self.mask = (keys[None, None, :] <= self.slots[:, :, None])[:, None]  # (B, 1, T, end)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout while training; skipped outright at p = 0 (pretraining, inference): no kernel launch, no copy."""
    return F.dropout(x, p, training) if p and training else x


def widen(x: torch.Tensor, dim: int, size: int, value: float = 0.0) -> torch.Tensor:
    """x with dimension `dim` padded at its end to `size` with `value` (x itself when already that wide):
    caches of rows that join a batch, each sized for its own rows, made one size."""
    missing = size - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_full(shape, value)], dim=dim)


class KVCache:
    """Keys and values of every layer, preallocated for `max_len` positions.

    Plain tensors and a length, nothing hidden: layer i's keys live in
    `k[i][:, :, :length]`, shape (B, H, max_len, Dh). Attention writes the new
    keys and values of a forward call at [length : length + T]; the model calls
    `advance(T)` once after all layers have written, so every layer of one call
    sees the same start position.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_heads: int,
        max_len: int,
        d_head: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = (batch_size, n_heads, max_len, d_head)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.length = 0

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H, T, Dh) at the current position; return keys and values so far.

        The returned views are (B, H, length + T, Dh) and in the dtype of k:
        a cache allocated in fp32 still works under bf16 autocast, just slower.
        """
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {start} cached + {k.shape[2]} new > max_len {self.max_len}")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end].to(k.dtype), self.v[layer][:, :, :end].to(v.dtype)

    def store_rows(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, rows: RowPositions
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H, T, Dh) at each row's own slots (`rows.slots`); return slots 0..rows.end.

        The returned keys and values are (B, H, rows.end, Dh); slots a row has
        not written (or wrote as padding) are for `rows.mask` to hide.
        """
        if rows.end > self.max_len:
            raise ValueError(f"KV cache full: slots up to {rows.end} > max_len {self.max_len}")
        index = (torch.arange(k.shape[0], device=k.device)[:, None], slice(None), rows.slots)  # picks (B, T, H, Dh)
        self.k[layer][index] = k.transpose(1, 2).to(self.k[layer].dtype)
        self.v[layer][index] = v.transpose(1, 2).to(self.v[layer].dtype)
        return self.k[layer][:, :, : rows.end].to(k.dtype), self.v[layer][:, :, : rows.end].to(v.dtype)

    def advance(self, n: int) -> None:
        """Mark n more positions as filled (after every layer has stored them)."""
        self.length += n

    def truncate(self, length: int) -> None:
        """Forget positions `length` and later (speculative decoding drops the rejected draft ids);
        their slots are written again by the next forward call."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} positions to {length}")
        self.length = length

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (long (B',)) in that order, e.g. the sequences still generating."""
        self.k = [k.index_select(0, index) for k in self.k]
        self.v = [v.index_select(0, index) for v in self.v]

    def extend(self, other: KVCache) -> None:
        """Append the rows of `other` after these (sequences joining a running batch).

        The shorter of the two is widened to the other's max_len with empty
        slots; each row keeps its slot numbers, so rows stepped with per-row
        positions (`RowPositions`) go on as before. `length` becomes the larger.
        """
        max_len = max(self.max_len, other.max_len)
        self.k = [torch.cat([widen(a, 2, max_len), widen(b, 2, max_len)]) for a, b in zip(self.k, other.k)]
        self.v = [torch.cat([widen(a, 2, max_len), widen(b, 2, max_len)]) for a, b in zip(self.v, other.v)]
        self.length = max(self.length, other.length)

    def reset(self) -> None:
        """Forget the cached positions; the buffers are reused as they are."""
        self.length = 0


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary positions and an optional KV cache.

    One fused (D, 3D) projection produces q, k and v; the softmax attention
    itself is `scaled_dot_product_attention`, which picks a fused kernel
    (flash on CUDA and on CPU) when it can.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        rotary: RotaryEmbedding,
        cache: KVCache | None = None,
        layer: int = 0,
        mask: torch.Tensor | None = None,
        rows: RowPositions | None = None,
    ) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D). With a cache, x holds the T tokens after the cached ones.

        `rows` (with a cache, no `mask`) puts each row's tokens at its own
        positions instead of after `cache.length` (see `RowPositions`).

        `mask`, if given, replaces the causal rule: a bool tensor broadcastable to
        (B, H, T, pos + T), True where query i may attend to key j. The caller
        builds causality into it, along with whatever else it needs (document
        boundaries in packed batches, a sliding window). Every query must be
        allowed at least one key (itself, say), or its output is NaN.
        """
        b, t, d = x.shape
        pos = cache.length if cache is not None else 0
        qkv = self.qkv(x).view(b, t, 3, self.n_heads, self.d_head)  # (B, T, 3D) -> (B, T, 3, H, Dh)
        q, k, v = qkv.unbind(dim=2)  # (B, T, H, Dh) each
        if rows is not None:
            if cache is None or mask is not None:
                raise ValueError("per-row positions need a KV cache and no mask of the caller's")
            q = rotary.rotate_rows(q, rows.slots).transpose(1, 2)  # (B, H, T, Dh)
            k = rotary.rotate_rows(k, rows.slots).transpose(1, 2)  # (B, H, T, Dh)
            k, v = cache.store_rows(layer, k, v.transpose(1, 2), rows)  # (B, H, end, Dh) each
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=rows.mask)  # (B, H, T, Dh)
            return self.out(y.transpose(1, 2).reshape(b, t, d))
        q = rotary(q, offset=pos).transpose(1, 2)  # (B, T, H, Dh) -> (B, H, T, Dh)
        k = rotary(k, offset=pos).transpose(1, 2)  # (B, H, T, Dh)
        v = v.transpose(1, 2)  # (B, H, T, Dh)
        if cache is not None:
            k, v = cache.store(layer, k, v)  # (B, H, pos + T, Dh) each

        if mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif pos == 0:
            # No cached keys: queries and keys are the same positions, the plain causal case.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)
        elif t == 1:
            # One new token may see every cached position and itself: no mask at all.
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            # A chunk after a cache: query i sits at absolute position pos + i and
            # may see keys 0..pos + i. SDPA's is_causal aligns the triangle to the
            # top-left (query i sees keys 0..i), which is wrong here, so the mask
            # is spelled out, aligned to the bottom-right.
            mask = torch.ones(t, pos + t, dtype=torch.bool, device=x.device).tril(diagonal=pos)  # (T, pos + T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(b, t, d)  # (B, H, T, Dh) -> (B, T, H, Dh) -> (B, T, D)
        return self.out(y)
