"""T5 encoder-decoder (Raffel et al. 2020) in the T5-Efficient shapes (Tay et al. 2021).

    source ids (B, S) -> shared embedding                                   (B, S, D)
        -> n_layers x encoder block (pre-norm):
             x = x + self-attention(norm(x))    bidirectional relative position bias
             x = x + FFN(norm(x))               ReLU, or gated GELU (v1.1)
        -> final norm                                                       (B, S, D) encoder output
    target ids (B, L) -> shared embedding                                   (B, L, D)
        -> n_decoder_layers x decoder block (pre-norm):
             x = x + causal self-attention(norm(x))   causal relative position bias
             x = x + cross-attention(norm(x), encoder output)   no position bias
             x = x + FFN(norm(x))
        -> final norm -> (x * D**-0.5 if tied) -> LM head                  (B, L, V)

What makes it T5 and decides parity with released checkpoints:
- attention scores are not scaled by 1/sqrt(d_head): T5 folds that factor
  into the initialisation of q (see `init_weights`);
- positions enter only as a learned bias on the attention scores, one scalar
  per head and distance bucket, computed once per stack and shared by all of
  its layers (the reference stores it in block 0; here it belongs to the
  stack, which says what it is);
- norms are RMS norms in fp32 without mean subtraction or bias (`T5Norm`);
- with tied embeddings the decoder output is scaled by d_model**-0.5 before
  the shared matrix turns it into logits.

Layout choices, not semantics: q, k, v of self-attention are one (D, 3I)
matmul, k, v of cross-attention one (D, 2I) matmul and the two input matrices
of a gated FFN one (D, 2F) matmul, where I = heads * d_head: fewer, larger
kernels, which is what counts on CPU. `stlm.interop.hf_t5` splits and joins
them when converting checkpoints.

Cached decoding without gradients (generation) runs the same arithmetic on
plain tensors (`T5Model._decode_cached`): at one token per step the matmuls
are small and module calls, mask building and small ops per layer cost as
much; the outputs are bit-identical to the module path's.

The model returns logits only; the loss belongs to the objectives, decoding
loops to `stlm.generation.seq2seq`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from stlm.models.layers import dropout, widen
from stlm.models.t5.config import T5Config


def shift_right(targets: torch.Tensor, start_id: int, pad_id: int = 0) -> torch.Tensor:
    """Decoder inputs for teacher forcing: targets (B, L) -> [start_id, targets[:-1]] (B, L).

    Label positions set to -100 (the loss's ignore index) become `pad_id`: they
    are fed to the decoder as tokens, and -100 is no token.
    """
    shifted = targets.new_empty(targets.shape)
    shifted[..., 0] = start_id
    shifted[..., 1:] = targets[..., :-1]
    return shifted.masked_fill_(shifted == -100, pad_id)


def relative_position_bucket(
    relative: torch.Tensor, bidirectional: bool, n_buckets: int, max_distance: int
) -> torch.Tensor:
    """Bucket index (long, same shape) of each key-minus-query distance.

    Bidirectional (encoder): half the buckets for keys before the query, half
    for keys after it. Causal (decoder): all for keys at or before it; future
    keys share bucket 0 and are masked anyway. Within a direction, half the
    buckets hold one distance each (0, 1, 2, ...); the rest cover distances up
    to max_distance in log-spaced bins, and anything farther shares the last
    bucket. The float formula follows the reference op for op, so that bin
    edges, which are truncated floats, land on the same integers.
    """
    if bidirectional:
        n_buckets //= 2
        bucket = (relative > 0).long() * n_buckets
        distance = relative.abs()
    else:
        bucket = torch.zeros_like(relative)
        distance = (-relative).clamp(min=0)
    max_exact = n_buckets // 2
    # Clamped below at max_exact only to keep log() finite: smaller distances take the exact branch.
    log_ratio = torch.log(distance.clamp(min=max_exact).float() / max_exact) / math.log(max_distance / max_exact)
    far = (max_exact + (log_ratio * (n_buckets - max_exact)).long()).clamp(max=n_buckets - 1)
    return bucket + torch.where(distance < max_exact, distance, far)


class RelativePositionBias(nn.Module):
    """Learned attention-score bias per head and distance bucket: (buckets, H) parameters."""

    def __init__(self, n_buckets: int, n_heads: int, max_distance: int, bidirectional: bool) -> None:
        super().__init__()
        self.n_buckets = n_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.weight = nn.Parameter(torch.empty(n_buckets, n_heads))

    def forward(self, q_len: int, k_len: int, offset: int = 0) -> torch.Tensor:
        """Bias (1, H, q_len, k_len) for queries at positions offset.. and keys at 0..k_len-1."""
        device = self.weight.device
        query = torch.arange(offset, offset + q_len, device=device)[:, None]  # (q, 1)
        key = torch.arange(k_len, device=device)[None, :]  # (1, k)
        buckets = relative_position_bucket(key - query, self.bidirectional, self.n_buckets, self.max_distance)
        return F.embedding(buckets, self.weight).permute(2, 0, 1).unsqueeze(0)  # (q, k, H) -> (1, H, q, k)


class T5Norm(nn.Module):
    """RMS norm in fp32, no mean subtraction, no bias: y = x / sqrt(mean(x^2) + eps) * gain.

    The same function as `layers.RMSNorm`, written as plain tensor ops in the
    reference's exact op order, so fp32 parity is to the bit; `F.rms_norm` was
    measured ~1.2x slower in the training backward. In fp32 `F.rms_norm` gives
    the same bits (torch 2.13) in one call, which the no-grad decoding path
    uses (`_rms_norm_fp32`): at one token per step dispatch is the cost.
    """

    def __init__(self, d_model: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _rms_norm(x, self.weight, self.eps)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`T5Norm` as a function: (..., D) -> (..., D), same dtype, statistics in fp32."""
    # dtype checks in Python, not .float() / .to(): a no-op cast is still a dispatcher
    # call, and at one decoding token this norm runs 97 times per step.
    xf = x if x.dtype == torch.float32 else x.float()  # bf16 activations normalised in fp32
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight
    return y if y.dtype == x.dtype else y.to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention with an additive float mask that carries the position bias."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.n_heads, self.d_head, self.dropout = cfg.n_heads, cfg.d_head, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_attn, bias=False)
        self.out = nn.Linear(cfg.d_attn, cfg.d_model, bias=False)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, cache: T5Cache | None = None, layer: int = 0
    ) -> torch.Tensor:
        """x (B, T, D), mask (1 or B, H, T, K) additive -> (B, T, D); K = T, or cached + T."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)  # (B, H, T, Dh) each
        if cache is not None:
            k, v = cache.store(layer, k, v)  # (B, H, K, Dh) each
        p = self.dropout if self.training else 0.0
        if mask.requires_grad:
            # Training: the position bias in the mask needs its gradient, which SDPA's fused
            # kernels do not give; its math fallback adds safe-softmax passes (isneginf, all,
            # where) and 1.0 scalings. Plain ops, bias added in place: ~13% less attention time.
            scores = torch.matmul(q, k.transpose(-1, -2)).add_(mask)  # (B, H, T, K), no 1/sqrt(Dh)
            y = torch.matmul(dropout(scores.softmax(dim=-1), p, True), v)  # (B, H, T, Dh)
        else:
            # scale=1.0: T5 does not divide scores by sqrt(d_head).
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=1.0)  # (B, H, T, Dh)
        return self.out(y.transpose(1, 2).reshape(b, t, -1))  # (B, T, H, Dh) -> (B, T, I) -> (B, T, D)


class CrossAttention(nn.Module):
    """Decoder queries attending to the encoder output; no position bias."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.n_heads, self.d_head, self.dropout = cfg.n_heads, cfg.d_head, cfg.dropout
        self.q = nn.Linear(cfg.d_model, cfg.d_attn, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_attn, bias=False)
        self.out = nn.Linear(cfg.d_attn, cfg.d_model, bias=False)

    def project(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output (B, S, D) -> keys and values (B, H, S, Dh): once per source, reused every step."""
        b, s, _ = memory.shape
        k, v = self.kv(memory).view(b, s, 2, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, L, D), k and v (1 or B, H, S, Dh), mask (B, 1, 1, S) additive or None -> (B, L, D)."""
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, L, Dh)
        if k.shape[0] != b:
            # One source shared by every row (beams): a stride-0 view, no copy.
            k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=1.0)  # (B, H, L, Dh)
        return self.out(y.transpose(1, 2).reshape(b, t, -1))  # (B, L, D)


class FeedForward(nn.Module):
    """ReLU MLP, or the gated-GELU (tanh approximation) MLP of T5 v1.1."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.gated, self.dropout = cfg.gated, cfg.dropout
        # Gated: the GELU branch and the linear branch are one (D, 2F) matmul, GELU half first.
        self.wi = nn.Linear(cfg.d_model, (2 if cfg.gated else 1) * cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _activate(self.wi(x), self.gated)  # (B, T, F)
        return self.wo(dropout(h, self.dropout, self.training))  # (B, T, D)


def _rms_norm_fp32(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`_rms_norm` for fp32 activations in one call: the same bits, measured ~2-3x faster
    at one decoding token, where dispatch is the cost."""
    return F.rms_norm(x, weight.shape, weight, eps)


def _add_mm(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x + a @ b as two ops: `torch.addmm` would cast x to bf16 under autocast."""
    return x + torch.mm(a, b)


def _matrix(linear: nn.Module) -> torch.Tensor | Callable[[torch.Tensor], torch.Tensor]:
    """A decoder matmul for `T5Model._decode_cached`: a plain Linear's weight transposed for `mm`;
    for a Linear replaced from outside (int8 quantization swaps in its own module), the module's
    `forward`, called directly: `__call__`'s hook machinery costs ~10 us a call, and a decoding
    step makes 6 such calls per layer."""
    return linear.weight.t() if type(linear) is nn.Linear else linear.forward


def _call_linear(a: torch.Tensor, linear: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`torch.mm(a, w)` for a replaced linear: its forward applied to the rows a (N, in)."""
    return linear(a)


def _add_linear(x: torch.Tensor, a: torch.Tensor, linear: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`torch.addmm(x, a, w)` for a replaced linear."""
    return x + linear(a)


def _activate(h: torch.Tensor, gated: bool) -> torch.Tensor:
    """FFN input projection (..., F) or (..., 2F) gated -> hidden activations (..., F)."""
    if gated:
        gate, up = h.chunk(2, dim=-1)  # (..., F) each
        return F.gelu(gate, approximate="tanh") * up
    return torch.relu_(h)  # in place: the matmul output has no other user, one (..., F) buffer fewer


class EncoderBlock(nn.Module):
    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.dropout = cfg.dropout
        self.attn_norm = T5Norm(cfg.d_model, cfg.norm_eps)
        self.attn = SelfAttention(cfg)
        self.ff_norm = T5Norm(cfg.d_model, cfg.norm_eps)
        self.ff = FeedForward(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + dropout(self.attn(self.attn_norm(x), mask), self.dropout, self.training)  # (B, S, D)
        return x + dropout(self.ff(self.ff_norm(x)), self.dropout, self.training)


class DecoderBlock(nn.Module):
    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.dropout = cfg.dropout
        self.attn_norm = T5Norm(cfg.d_model, cfg.norm_eps)
        self.attn = SelfAttention(cfg)
        self.cross_norm = T5Norm(cfg.d_model, cfg.norm_eps)
        self.cross = CrossAttention(cfg)
        self.ff_norm = T5Norm(cfg.d_model, cfg.norm_eps)
        self.ff = FeedForward(cfg)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor,
        memory: tuple[torch.Tensor, torch.Tensor],
        cross_mask: torch.Tensor | None,
        cache: T5Cache | None,
        layer: int,
    ) -> torch.Tensor:
        drop, training = self.dropout, self.training
        x = x + dropout(self.attn(self.attn_norm(x), self_mask, cache, layer), drop, training)  # (B, L, D)
        x = x + dropout(self.cross(self.cross_norm(x), *memory, cross_mask), drop, training)
        return x + dropout(self.ff(self.ff_norm(x)), drop, training)


class T5Cache:
    """Decoder state for incremental decoding, plain tensors and a length.

    Self-attention keys and values grow by the tokens of each `decode` call:
    layer i's live in `k[i, :, :, :length]`, (n_layers, B, H, max_len, Dh)
    preallocated. Cross-attention keys and values depend only on the encoder
    output, so the first `decode` call projects them once for every layer
    (`cross_k`, `cross_v`: per layer (1 or B, H, S, Dh)) and later calls reuse
    them. A batch of 1 there is shared by all rows, as beams of one source are.
    A cache belongs to one encoder output: reuse it for another source and the
    old cross-attention keys are used.
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
        shape = (n_layers, batch_size, n_heads, max_len, d_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.cross_k: list[torch.Tensor] | None = None
        self.cross_v: list[torch.Tensor] | None = None
        self.cross_mask: torch.Tensor | None = None  # (B, 1, 1, S) additive, or None for no padding
        # Filled by the first decode call without gradients (`T5Model._decode_cached`):
        # the causal self-attention mask of every position (1, H, max_len, max_len), and
        # each decoder layer's weights as plain tensors, matrices transposed for `mm`.
        self.self_mask: torch.Tensor | None = None
        self.weights: list[tuple[torch.Tensor, ...]] | None = None

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H, T, Dh) after the cached positions; return all so far (B, H, length + T, Dh)."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"decoder cache full: {start} cached + {k.shape[2]} new > max_len {self.max_len}")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        keys, values = self.k[layer, :, :, :end], self.v[layer, :, :, :end]
        if keys.dtype != k.dtype:  # an fp32 cache under bf16 autocast: works, just slower
            keys, values = keys.to(k.dtype), values.to(v.dtype)
        return keys, values

    def advance(self, n: int) -> None:
        """Mark n more positions as filled (after every layer has stored them)."""
        self.length += n

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (long (B,)), e.g. the beams that survive a step, in that order."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)
        if self.cross_k is not None and self.cross_k[0].shape[0] != 1:
            self.cross_k = [k.index_select(0, index) for k in self.cross_k]
            self.cross_v = [v.index_select(0, index) for v in self.cross_v]  # type: ignore[union-attr]
            if self.cross_mask is not None:
                self.cross_mask = self.cross_mask.index_select(0, index)

    def extend(self, other: T5Cache) -> None:
        """Append the rows of `other` (sources joining a running batch) after these.

        Both caches must have been through a `decode` call (their cross-attention
        keys are filled). Decoder slots widen to the larger max_len and source
        keys to the longer source, the padded keys masked with the dtype's
        minimum as padding is in `decode`; each row keeps its slot numbers, so
        rows stepped with per-row positions go on as before.
        """
        if self.cross_k is None or other.cross_k is None or self.cross_v is None or other.cross_v is None:
            raise ValueError("extend joins caches that have decoded a step (their cross-attention keys are filled)")
        mine, theirs = self._row_cross(), other._row_cross()
        max_len = max(self.max_len, other.max_len)
        self.k = torch.cat([widen(self.k, 3, max_len), widen(other.k, 3, max_len)], dim=1)
        self.v = torch.cat([widen(self.v, 3, max_len), widen(other.v, 3, max_len)], dim=1)
        s = max(mine[0][0].shape[2], theirs[0][0].shape[2])
        self.cross_k = [torch.cat([widen(a, 2, s), widen(b, 2, s)]) for a, b in zip(mine[0], theirs[0])]
        self.cross_v = [torch.cat([widen(a, 2, s), widen(b, 2, s)]) for a, b in zip(mine[1], theirs[1])]
        floor = torch.finfo(mine[2].dtype).min
        self.cross_mask = torch.cat([widen(mine[2], 3, s, floor), widen(theirs[2], 3, s, floor).to(mine[2].dtype)])
        self.length = max(self.length, other.length)
        if self.self_mask is not None and self.self_mask.shape[-1] != max_len:
            self.self_mask = None  # its size follows max_len; rebuilt by the next decode call

    def _row_cross(self) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Cross-attention keys and values per layer, one per row (B, H, S, Dh), and the additive
        source mask (B, 1, 1, S), zeros where the cache had none."""
        assert self.cross_k is not None and self.cross_v is not None
        b = self.batch_size
        keys = [k.expand(b, -1, -1, -1) for k in self.cross_k]  # a shared source (beams) becomes one per row
        values = [v.expand(b, -1, -1, -1) for v in self.cross_v]
        mask = self.cross_mask
        if mask is None:
            mask = keys[0].new_zeros((b, 1, 1, keys[0].shape[2]))  # (B, 1, 1, S): no padding
        return keys, values, mask.expand(b, -1, -1, -1)


class T5Model(nn.Module):
    """Encoder-decoder: source ids (B, S) and decoder input ids (B, L) -> logits (B, L, V)."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.encoder_bias = RelativePositionBias(cfg.rel_buckets, cfg.n_heads, cfg.rel_max_distance, True)
        self.encoder = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_layers))
        self.encoder_norm = T5Norm(cfg.d_model, cfg.norm_eps)
        self.decoder_bias = RelativePositionBias(cfg.rel_buckets, cfg.n_heads, cfg.rel_max_distance, False)
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_decoder_layers))  # type: ignore[arg-type]
        self.decoder_norm = T5Norm(cfg.d_model, cfg.norm_eps)
        # Tied: the shared embedding is the output matrix, no module of its own.
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        """(Re)initialise every parameter in place, T5 style (mesh TensorFlow / HF `_init_weights`).

        Every matrix gets std 1/sqrt(fan_in), except q, whose std is further
        divided by sqrt(d_head): that is the 1/sqrt(d_head) score scaling T5
        leaves out of attention, moved into the weights. Embedding std 1: the
        tied head's d_model**-0.5 output scaling brings logits back to unit
        scale. An untied head gets std 1/sqrt(d_model) as in t5x (the HF
        reference uses 1, which starts training from logits of std sqrt(D)).
        Call again after materialising a model built on the meta device.
        """
        cfg = self.config
        d, i = cfg.d_model, cfg.d_attn

        def normal(weight: torch.Tensor, std: float) -> None:
            nn.init.normal_(weight, mean=0.0, std=std)

        normal(self.embed.weight, 1.0)
        if self.head is not None:
            normal(self.head.weight, d**-0.5)
        normal(self.encoder_bias.weight, d**-0.5)
        normal(self.decoder_bias.weight, d**-0.5)
        attentions = [blk.attn for blk in [*self.encoder, *self.decoder]]
        for attn in attentions:
            q, k, v = attn.qkv.weight.view(3, i, d).unbind(0)  # views into the fused matrix
            normal(q, (d * cfg.d_head) ** -0.5)
            normal(k, d**-0.5)
            normal(v, d**-0.5)
            normal(attn.out.weight, i**-0.5)
        for blk in self.decoder:
            normal(blk.cross.q.weight, (d * cfg.d_head) ** -0.5)
            normal(blk.cross.kv.weight, d**-0.5)
            normal(blk.cross.out.weight, i**-0.5)
        for blk in [*self.encoder, *self.decoder]:
            normal(blk.ff.wi.weight, d**-0.5)
            normal(blk.ff.wo.weight, cfg.d_ff**-0.5)
        for module in self.modules():
            if isinstance(module, T5Norm):
                module.reset_parameters()

    def untie_head(self) -> None:
        """Give a tied model an output Linear of its own holding embed.weight * d_model**-0.5.

        The same logits (the tied head's input scaling folded into the copy), and a module
        that inference transforms replacing Linear layers (int8 quantization) reach. For
        inference only: the copy no longer follows the embedding, and the state dict changes.
        """
        if self.head is not None:
            return
        head = nn.Linear(self.config.d_model, self.config.vocab_size, bias=False)
        head.to(device=self.embed.weight.device, dtype=self.embed.weight.dtype)
        with torch.no_grad():
            head.weight.copy_(self.embed.weight * self.config.d_model**-0.5)
        self.head = head

    # --- the two stacks -------------------------------------------------------------------------

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Source ids (B, S), attention_mask (B, S) 1/True = real token -> encoder output (B, S, D)."""
        _check_ids("input_ids", input_ids)
        b, s = input_ids.shape
        dtype = self._compute_dtype(input_ids.device)
        # One additive mask for all layers: position bias, plus padded keys pushed to the
        # dtype's minimum (not -inf: a row with every key padded stays finite, as in the reference).
        mask = self.encoder_bias(s, s).to(dtype)  # (1, H, S, S)
        if attention_mask is not None:
            keep = _key_mask("attention_mask", attention_mask, b, s)  # (B, 1, 1, S)
            mask = torch.where(keep, mask, torch.finfo(dtype).min)  # (B, H, S, S)
        mask = mask.contiguous()
        x = dropout(self.embed(input_ids), self.config.dropout, self.training)  # (B, S, D)
        for blk in self.encoder:
            x = blk(x, mask)
        return dropout(self.encoder_norm(x), self.config.dropout, self.training)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        encoder_out: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: T5Cache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decoder input ids (B, L) and encoder output (B, S, D) -> logits (B, L, V).

        attention_mask (B, S) marks the real source tokens, as given to `encode`.
        With a cache the L tokens continue it (positions cache.length ..), their
        keys and values are appended and the cache advances by L; the first call
        with a cache also fills its cross-attention keys and values from
        `encoder_out`, which later calls ignore. Prefill plus single-token steps
        give the same logits as one full call.

        `positions` (long (B,), with a filled cache and no gradient: generation)
        starts each row at its own decoder position instead, writing the cache
        slots of those numbers and seeing slots 0 .. its own position: rows that
        joined a running batch at different times step together. The cache's
        length becomes the highest slot written + 1.
        """
        _check_ids("decoder_input_ids", decoder_input_ids)
        b, t = decoder_input_ids.shape
        offset = 0 if cache is None else cache.length
        if cache is not None and cache.batch_size != b:
            raise ValueError(f"cache was made for batch size {cache.batch_size}, got decoder ids of batch {b}")
        dtype = self._compute_dtype(decoder_input_ids.device)
        if cache is not None and cache.cross_k is not None:
            cross_k, cross_v, cross_mask = cache.cross_k, cache.cross_v, cache.cross_mask
        else:
            cross_k, cross_v, cross_mask = self._cross_memory(encoder_out, attention_mask, dtype)
            if cache is not None:
                cache.cross_k, cache.cross_v, cache.cross_mask = cross_k, cross_v, cross_mask
        assert cross_v is not None
        if cache is not None and not torch.is_grad_enabled() and not (self.training and self.config.dropout):
            return self._decode_cached(decoder_input_ids, cache, cross_k, cross_v, cross_mask, dtype, positions)
        if positions is not None:
            raise ValueError("per-row positions are for generation: a cache, no gradient, no dropout")
        self_mask = self._causal_mask(t, offset, dtype)  # (1, H, T, offset + T)

        x = dropout(self.embed(decoder_input_ids), self.config.dropout, self.training)  # (B, L, D)
        for layer, blk in enumerate(self.decoder):
            x = blk(x, self_mask, (cross_k[layer], cross_v[layer]), cross_mask, cache, layer)
        if cache is not None:
            cache.advance(t)
        x = dropout(self.decoder_norm(x), self.config.dropout, self.training)  # (B, L, D)
        if self.head is None:
            return F.linear(x * self.config.d_model**-0.5, self.embed.weight)  # (B, L, V)
        return self.head(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Source ids (B, S), decoder input ids (B, L) [, source mask (B, S)] -> logits (B, L, V)."""
        encoder_out = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, encoder_out, attention_mask)

    def _decode_cached(
        self,
        ids: torch.Tensor,
        cache: T5Cache,
        cross_k: list[torch.Tensor],
        cross_v: list[torch.Tensor],
        cross_mask: torch.Tensor | None,
        dtype: torch.dtype,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`decode` with a cache and no gradient (generation): decoder ids (B, T) -> logits (B, T, V).

        The arithmetic of the decoder blocks op for op, run on plain tensors:
        at one token per step the model's matmuls are small, and module calls,
        weight lookups and mask building per layer cost as much as they do.
        Rows are flattened to (B*T, D), which is what `F.linear` does inside.
        With `positions` (B,) each row writes and reads at its own slots.
        """
        cfg = self.config
        b, t = ids.shape
        n_heads, d_head, eps = cfg.n_heads, cfg.d_head, cfg.norm_eps
        start, end = cache.length, cache.length + t
        slots = None
        if positions is not None:
            if tuple(positions.shape) != (b,):
                raise ValueError(f"positions must have shape ({b},) like the decoder ids, got {tuple(positions.shape)}")
            slots = positions[:, None] + torch.arange(t, device=positions.device)  # (B, T)
            end = int(slots.max()) + 1
        if end > cache.max_len:
            raise ValueError(f"decoder cache full: {start} cached + {t} new > max_len {cache.max_len}")
        if cache.self_mask is None or cache.self_mask.dtype != dtype:
            cache.self_mask = self._causal_mask(cache.max_len, 0, dtype)  # (1, H, max_len, max_len)
        if slots is None:
            self_mask = cache.self_mask[:, :, start:end, :end]  # (1, H, T, end)
        else:
            # Each query's own row of the causal table: its bias over keys 0..its slot, later keys
            # (another row's future, or nothing written) at the dtype's minimum.
            rows = cache.self_mask[0, :, :, :end].index_select(1, slots.reshape(-1))  # (H, B*T, end)
            self_mask = rows.view(n_heads, b, t, end).transpose(0, 1)  # (B, H, T, end)
            batch_index = torch.arange(b, device=slots.device)[:, None]  # (B, 1), with slots (B, T)
        if cache.weights is None:
            cache.weights = [
                (
                    blk.attn_norm.weight,
                    _matrix(blk.attn.qkv),
                    _matrix(blk.attn.out),
                    blk.cross_norm.weight,
                    _matrix(blk.cross.q),
                    _matrix(blk.cross.out),
                    blk.ff_norm.weight,
                    _matrix(blk.ff.wi),
                    _matrix(blk.ff.wo),
                )
                for blk in self.decoder
            ]
        gated = cfg.gated
        # fp32 (no autocast): one-call norm and the residual add inside the matmul (addmm), the
        # same bits. bf16: the blocks' ops, so the fp32 residual stream stays fp32 under autocast.
        fp32 = dtype == torch.float32
        norm = _rms_norm_fp32 if fp32 else _rms_norm
        mm, add_mm = torch.mm, torch.addmm if fp32 else _add_mm
        if cache.weights and not isinstance(cache.weights[0][1], torch.Tensor):  # replaced linears (int8)
            mm, add_mm = _call_linear, _add_linear
        # Per-layer views of the cache, taken per call: `reorder` replaces its tensors.
        cache_k, cache_v = cache.k.unbind(0), cache.v.unbind(0)
        x = self.embed(ids).view(b * t, -1)  # (B*T, D)
        for layer, (n1, w_qkv, w_out, n2, w_q, w_cross_out, n3, w_in, w_ff_out) in enumerate(cache.weights):
            qkv = mm(norm(x, n1, eps), w_qkv)  # (B*T, 3I)
            q, k, v = qkv.view(b, t, 3, n_heads, d_head).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, Dh) each
            keys, values = cache_k[layer], cache_v[layer]  # (B, H, max_len, Dh) each
            if slots is None:
                keys.narrow(2, start, t).copy_(k)
                values.narrow(2, start, t).copy_(v)
            else:  # indexing (B, T) rows and slots around the heads picks (B, T, H, Dh)
                keys[batch_index, :, slots] = k.transpose(1, 2).to(keys.dtype)
                values[batch_index, :, slots] = v.transpose(1, 2).to(values.dtype)
            k, v = keys.narrow(2, 0, end), values.narrow(2, 0, end)  # (B, H, end, Dh) each
            if k.dtype != q.dtype:  # an fp32 cache under bf16 autocast: works, just slower
                k, v = k.to(q.dtype), v.to(q.dtype)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self_mask, scale=1.0)  # (B, H, T, Dh)
            x = add_mm(x, y.transpose(1, 2).reshape(b * t, -1), w_out)  # (B*T, D)
            q = mm(norm(x, n2, eps), w_q).view(b, t, n_heads, d_head).transpose(1, 2)  # (B, H, T, Dh)
            k, v = cross_k[layer], cross_v[layer]  # (1 or B, H, S, Dh)
            if k.shape[0] != b:
                k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=cross_mask, scale=1.0)  # (B, H, T, Dh)
            x = add_mm(x, y.transpose(1, 2).reshape(b * t, -1), w_cross_out)
            x = add_mm(x, _activate(mm(norm(x, n3, eps), w_in), gated), w_ff_out)
        if slots is None:
            cache.advance(t)
        else:
            cache.length = max(cache.length, end)
        x = norm(x, self.decoder_norm.weight, eps)  # (B*T, D)
        if self.head is None:
            return F.linear(x * cfg.d_model**-0.5, self.embed.weight).view(b, t, -1)  # (B, T, V)
        return self.head(x).view(b, t, -1)

    # --- helpers ---------------------------------------------------------------------------------

    def _cross_memory(
        self, encoder_out: torch.Tensor, attention_mask: torch.Tensor | None, dtype: torch.dtype
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None]:
        """Per decoder layer keys and values (B, H, S, Dh) of the encoder output, and the
        additive padding mask (B, 1, 1, S) shared by all layers (None without padding)."""
        memory = [blk.cross.project(encoder_out) for blk in self.decoder]
        mask = None
        if attention_mask is not None:
            b, s, _ = encoder_out.shape
            keep = _key_mask("attention_mask", attention_mask, b, s)  # (B, 1, 1, S)
            mask = torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, torch.finfo(dtype).min)
        return [k for k, _ in memory], [v for _, v in memory], mask

    def _causal_mask(self, t: int, offset: int, dtype: torch.dtype) -> torch.Tensor:
        """Decoder self-attention mask (1, H, T, offset + T): causal relative bias for queries at
        positions offset.. over keys 0..offset+T-1, later keys pushed to the dtype's minimum."""
        mask = self.decoder_bias(t, offset + t, offset).to(dtype)  # (1, H, T, K)
        if t > 1:  # a single new token may see every key: no triangle to cut
            future = torch.ones(t, offset + t, dtype=torch.bool, device=mask.device).triu(offset + 1)
            mask = mask.masked_fill(future, torch.finfo(dtype).min)
        return mask.contiguous()

    def new_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> T5Cache:
        """An empty decoder cache for `batch_size` rows of up to `max_len` decoder tokens.

        max_len defaults to config.max_seq_len; device to the model's. dtype
        defaults to what attention will produce: the autocast dtype when
        autocast is on for that device at this call, else the parameters' dtype.
        """
        cfg = self.config
        max_len = cfg.max_seq_len if max_len is None else max_len
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"cache max_len must be an integer >= 1, got {max_len!r}")
        weight = self.embed.weight
        device = weight.device if device is None else torch.device(device)
        dtype = self._compute_dtype(device) if dtype is None else dtype
        assert cfg.n_decoder_layers is not None
        return T5Cache(cfg.n_decoder_layers, batch_size, cfg.n_heads, max_len, cfg.d_head, device=device, dtype=dtype)

    def num_params(self) -> int:
        """Number of parameters, a tied embedding/head counted once."""
        return sum(p.numel() for p in self.parameters())

    def _compute_dtype(self, device: torch.device) -> torch.dtype:
        # Masks must match the attention inputs' dtype: the autocast dtype when it is on.
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.embed.weight.dtype


def _check_ids(name: str, ids: torch.Tensor) -> None:
    if ids.ndim != 2:
        raise ValueError(f"{name} must be (batch, tokens), got shape {tuple(ids.shape)}")


def _key_mask(name: str, mask: torch.Tensor, b: int, s: int) -> torch.Tensor:
    """(B, S) 0/1 or bool -> (B, 1, 1, S) bool, True where a key may be attended to."""
    if tuple(mask.shape) != (b, s):
        raise ValueError(f"{name} must have shape {(b, s)} like the source ids, got {tuple(mask.shape)}")
    return mask.bool()[:, None, None, :]
