"""Pooled byte language model: bytes in, bytes out, a deep-narrow core over patches.

    ids (B, T) -> byte embedding + hashed 2..4-gram embeddings           (B, T, Dl)
               -> local encoder: n_enc_layers blocks, sliding window      (B, T, Dl)
                  (every block: x + dropout(attention), x + dropout(MLP); dropout in training only)
               -> boundary rule: which bytes close a patch                (B, T) bool
               -> pool: Linear(mean || last byte) per patch               (B, P, Dg)
               -> global core: deep-narrow causal transformer             (B, P, Dg)
               -> unpool: byte t gets the latest patch CLOSED at or       (B, T, Dl)
                  before t, added to the encoder output (skip)
               -> local decoder: n_dec_layers blocks, sliding window      (B, T, Dl)
               -> RMSNorm -> byte head tied to the byte embedding         (B, T, V)

With `mtp_heads`, `forward(ids, heads=True)` also reads the bytes 2..K ahead from the
local decoder's output through `MultiTokenHeads` (shared norm and byte head).

The expensive core runs once per patch (~6 bytes with the space rule), the
cheap local blocks once per byte: about the FLOPs per byte of a token model,
without its vocabulary table or tokenizer.

Causality: the logits at position t depend on bytes <= t only (pooling.py has
the diagram and the argument). Documents packed into one window (`BOS ... EOS
BOS ...`) are isolated at every level: look-back features stop at the BOS,
local attention and core attention are masked by document, and no patch spans
two documents.

`forward(ids)` has the interface of `DecoderLM`, so training, bits-per-byte
evaluation and checkpoints work unchanged. `forward(ids, cache)` decodes with
caches: the local blocks run per byte with a KV cache, the core runs only when
a patch closes, with its own KV cache (one slot per patch).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stlm.models.byte_decoder.boundaries import (
    BoundaryRule,
    document_ids,
    fit_entropy_table,
    fit_entropy_threshold,
    mean_patch_length,
    preceding_ids,
)
from stlm.models.byte_decoder.config import PooledByteConfig
from stlm.models.byte_decoder.pooling import (
    PatchLayout,
    byte_attention_mask,
    patch_attention_mask,
    patch_layout,
    pool,
    pool_open_patch,
    unpool,
)
from stlm.models.layers import (
    CausalSelfAttention,
    KVCache,
    MultiTokenHeads,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    dropout,
)

# Polynomial rolling hash for byte n-grams, mod a Mersenne prime: every
# intermediate stays below 2**62, so int64 never overflows.
_HASH_MULT = 1_000_003
_HASH_MOD = 2**31 - 1


class Block(nn.Module):
    """Pre-norm transformer layer; its MLP may be one module shared with other blocks.
    Dropout (training only) on what each half adds to the residual."""

    def __init__(self, d_model: int, n_heads: int, mlp: SwiGLU, eps: float, p: float) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(d_model, eps)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.mlp_norm = RMSNorm(d_model, eps)
        self.mlp = mlp
        self.dropout = p

    def forward(
        self, x: torch.Tensor, rotary: RotaryEmbedding, mask: torch.Tensor, cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        p, training = self.dropout, self.training
        x = x + dropout(self.attn(self.attn_norm(x), rotary, cache, layer, mask), p, training)  # (B, T, D)
        return x + dropout(self.mlp(self.mlp_norm(x)), p, training)  # (B, T, D)


class ByteInput(nn.Module):
    """Byte embedding plus hashed embeddings of the n-grams ending at each byte (BLT).

    A 264-row table says little about a byte on its own; hashing the 2-, 3- and
    4-grams that end at it into a few thousand rows each gives the first local
    layer word-piece-like features for almost no compute.
    """

    def __init__(self, cfg: PooledByteConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_local)
        self.ngrams = cfg.hash_ngrams
        self.buckets = cfg.hash_buckets
        self.hashed = nn.Embedding(len(self.ngrams) * self.buckets, cfg.d_local) if self.ngrams else None

    def forward(self, ids: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        """ids (B, T), before (B, T, K) bytes t-1..t-K (pad outside the document) -> (B, T, Dl)."""
        x = self.embed(ids)  # (B, T, Dl)
        if self.hashed is None:
            return x
        b, t = ids.shape
        rows, h = [], ids
        for n in range(2, max(self.ngrams) + 1):  # over n-gram length, not time
            h = (h * _HASH_MULT + before[..., n - 2]) % _HASH_MOD  # (B, T): hash of bytes t-n+1..t
            if n in self.ngrams:
                rows.append(h % self.buckets + self.ngrams.index(n) * self.buckets)
        rows = torch.stack(rows, dim=-1).view(b * t, len(rows))  # (B*T, n sizes)
        hashed = F.embedding_bag(rows, self.hashed.weight, mode="sum")  # (B*T, Dl)
        return x + hashed.view(b, t, -1)  # (B, T, Dl)


class PooledCache:
    """Decoding state of one sequence: KV caches plus the open patch.

    local        KVCache of the encoder and decoder layers, one slot per byte
    core         KVCache of the core (one layer per applied block), one slot per
                 patch; slot p belongs to patch p, written when p closes
    ids, doc     every byte so far and its document (look-back, attention masks)
    patch_doc    document of each core slot; -1 for a patch cut short by a BOS
    acc, count   sum of the open patch's pooling inputs, and its length in bytes
    read         what the bytes since the last close add to the encoder output
    """

    def __init__(self, local: KVCache, core: KVCache, d_local: int, dtype: torch.dtype) -> None:
        device, n = local.k[0].device, local.max_len
        self.local, self.core = local, core
        self.ids = torch.zeros(n, dtype=torch.long, device=device)
        self.doc = torch.zeros(n, dtype=torch.long, device=device)
        self.patch_doc = torch.full((n,), -1, dtype=torch.long, device=device)
        self.acc = torch.zeros(d_local, dtype=dtype, device=device)
        self.count = 0
        self.n_patches = 0
        self.closed_last = False
        self.read = torch.zeros(1, 1, d_local, dtype=dtype, device=device)

    @property
    def length(self) -> int:
        return self.local.length

    @property
    def max_len(self) -> int:
        return self.local.max_len

    @property
    def batch_size(self) -> int:
        return 1


class PooledByteLM(nn.Module):
    """Causal byte language model with pooling: ids (B, T) -> next-byte logits (B, T, V)."""

    def __init__(self, config: PooledByteConfig) -> None:
        super().__init__()
        cfg = self.config = config
        assert cfg.d_ff_local is not None and cfg.d_ff_global is not None  # resolved in __post_init__
        dl, dg, eps, p = cfg.d_local, cfg.d_global, cfg.norm_eps, cfg.dropout
        self.input = ByteInput(cfg)
        self.local_rotary = RotaryEmbedding(cfg.d_head_local, cfg.max_seq_len, cfg.rope_theta)
        self.encoder = nn.ModuleList(
            Block(dl, cfg.local_heads, SwiGLU(dl, cfg.d_ff_local), eps, p) for _ in range(cfg.n_enc_layers)
        )
        self.boundaries = BoundaryRule(cfg)
        self.pool_norm = RMSNorm(dl, eps)
        self.pool_proj = nn.Linear(2 * dl if cfg.pooling == "mean_last" else dl, dg, bias=False)
        self.global_rotary = RotaryEmbedding(cfg.d_head_global, cfg.max_seq_len, cfg.rope_theta)
        # A shared FFN is one module held by every core block: `parameters()` yields it once.
        shared = SwiGLU(dg, cfg.d_ff_global) if cfg.share_ffn else None
        self.core = nn.ModuleList(
            Block(dg, cfg.global_heads, shared or SwiGLU(dg, cfg.d_ff_global), eps, p)
            for _ in range(cfg.n_global_layers)
        )
        self.core_norm = RMSNorm(dg, eps)
        self.unpool_proj = nn.Linear(dg, dl, bias=False)
        # What a byte reads before any patch of its document has closed.
        self.no_patch = nn.Parameter(torch.zeros(dl))
        self.decoder = nn.ModuleList(
            Block(dl, cfg.local_heads, SwiGLU(dl, cfg.d_ff_local), eps, p) for _ in range(cfg.n_dec_layers)
        )
        self.norm = RMSNorm(dl, eps)
        self.head = nn.Linear(dl, cfg.vocab_size, bias=False)
        if cfg.tie_head:
            self.head.weight = self.input.embed.weight
        self.mtp = MultiTokenHeads(dl, cfg.mtp_heads, eps) if cfg.mtp_heads else None
        self.init_weights()

    def init_weights(self) -> None:
        """(Re)initialise every parameter and buffer in place (also after a meta-device build).

        Normal(0, init_std) everywhere, except: projections that write into a
        residual stream (attention output, MLP down, the unpool projection into
        the byte stream) get init_std / sqrt(2 * depth of that stream), so the
        residual's variance at initialisation does not grow with depth (GPT-2);
        norm gains start at 1 and the no-patch vector at 0. The entropy rule
        goes back to unfitted.
        """
        cfg = self.config
        if cfg.tie_head:
            self.head.weight = self.input.embed.weight  # to_empty() unties shared parameters
        std = cfg.init_std
        local_std = std / math.sqrt(2 * (cfg.n_enc_layers + cfg.n_dec_layers))
        core_std = std / math.sqrt(2 * cfg.core_depth)
        nn.init.normal_(self.input.embed.weight, std=std)
        if self.input.hashed is not None:
            nn.init.normal_(self.input.hashed.weight, std=std)
        if not cfg.tie_head:
            nn.init.normal_(self.head.weight, std=std)
        for blocks, residual_std in ((self.encoder, local_std), (self.decoder, local_std), (self.core, core_std)):
            for block in blocks:
                nn.init.normal_(block.attn.qkv.weight, std=std)
                nn.init.normal_(block.attn.out.weight, std=residual_std)
                nn.init.normal_(block.mlp.gate_up.weight, std=std)
                nn.init.normal_(block.mlp.down.weight, std=residual_std)
                block.attn_norm.reset_parameters()
                block.mlp_norm.reset_parameters()
        nn.init.normal_(self.pool_proj.weight, std=std)
        nn.init.normal_(self.unpool_proj.weight, std=local_std)
        nn.init.zeros_(self.no_patch)
        for norm in (self.pool_norm, self.core_norm, self.norm):
            norm.reset_parameters()
        self.local_rotary.reset_parameters()
        self.global_rotary.reset_parameters()
        self.boundaries.reset_parameters()
        if self.mtp is not None:
            self.mtp.reset_parameters(std, std / math.sqrt(2))

    # --- the network ---------------------------------------------------------------------------

    def forward(self, ids: torch.Tensor, cache: PooledCache | None = None, *, heads: bool = False) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, V); logits at t depend on ids[:, :t+1] only.

        `heads=True` (a model with `mtp_heads`) gives every multi-token head,
        (B, T, K, V): [..., 0, :] the usual logits, [..., k-1, :] the byte k ahead.

        Without a cache, the ids are one window (positions 0..T-1). With a
        cache, they continue it: an empty cache is filled in one pass (prefill),
        later ids are fed byte by byte. Either way the logits equal those of
        one uncached forward over the whole sequence.
        """
        x = self._trunk(ids, cache)  # (B, T, Dl)
        if heads:
            if self.mtp is None:
                raise ValueError("this model has no multi-token heads (config.mtp_heads is 0)")
            x = torch.cat([x[:, :, None], self.mtp(x)], dim=2)  # (B, T, 1, Dl) + (B, T, K-1, Dl) -> (B, T, K, Dl)
        return self.head(self.norm(x))  # (B, T, [K,] Dl) -> (B, T, [K,] V)

    def _trunk(self, ids: torch.Tensor, cache: PooledCache | None) -> torch.Tensor:
        """ids (B, T) -> the local decoder's output (B, T, Dl), before the final norm."""
        if ids.ndim != 2:
            raise ValueError(f"ids must be (batch, bytes), got shape {tuple(ids.shape)}")
        b, t = ids.shape
        start = cache.length if cache is not None else 0
        if start + t > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + t} bytes exceeds max_seq_len {self.config.max_seq_len}")
        if cache is None:
            return self._forward_window(ids)
        if b != 1:
            raise ValueError(f"cached decoding runs one sequence at a time, got ids of batch size {b}")
        if start + t > cache.max_len:
            raise ValueError(f"cache full: {start} cached + {t} new > max_len {cache.max_len}")
        if start == 0:
            return self._forward_window(ids, cache)
        return torch.cat([self._step(ids[:, i : i + 1], cache) for i in range(t)], dim=1)  # (1, T, Dl)

    def _forward_window(self, ids: torch.Tensor, cache: PooledCache | None = None) -> torch.Tensor:
        """The whole window at once (training, scoring, prefill) -> (B, T, Dl): no loop over batch or time."""
        cfg = self.config
        b, t = ids.shape
        doc = document_ids(ids, cfg.bos_id)  # (B, T)
        before = preceding_ids(ids, doc, cfg.context_bytes, cfg.pad_id)  # (B, T, K)
        x = self.input(ids, before)  # (B, T, Dl)
        byte_mask = byte_attention_mask(doc, cfg.local_window)  # (B, 1, T, T)
        local_cache = cache.local if cache is not None else None
        for i, block in enumerate(self.encoder):
            x = block(x, self.local_rotary, byte_mask, local_cache, i)  # (B, T, Dl)

        closes = self.boundaries(ids, before[..., 0])  # (B, T)
        layout = patch_layout(closes, ids, doc, cfg.bos_id)
        h = self.pool_norm(x)  # (B, T, Dl)
        # Cast back to the residual dtype: under autocast the core's stream stays fp32.
        patches = self.pool_proj(pool(h, layout, cfg.pooling)).to(x.dtype)  # (B, P, k*Dl) -> (B, P, Dg)
        g = self._core(patches, patch_attention_mask(layout.patch_doc), cache.core if cache is not None else None)
        up = self.unpool_proj(self.core_norm(g))  # (B, P, Dg) -> (B, P, Dl)
        read = unpool(up, self.no_patch, layout)  # (B, T, Dl)
        x = x + read  # skip: the encoder's byte features plus the latest closed patch

        n_enc = len(self.encoder)
        for i, block in enumerate(self.decoder):
            x = block(x, self.local_rotary, byte_mask, local_cache, n_enc + i)  # (B, T, Dl)
        if cache is not None:
            cache.local.advance(t)
            self._keep_open_patch(cache, ids, doc, closes, layout, h, read)
        return x  # (B, T, Dl)

    def _core(self, x: torch.Tensor, mask: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """x (B, P, Dg) -> (B, P, Dg) through the core schedule (repeats and loops included)."""
        for layer, unique in enumerate(self.config.core_schedule):
            x = self.core[unique](x, self.global_rotary, mask, cache, layer)  # (B, P, Dg)
        if cache is not None:
            cache.advance(x.shape[1])
        return x

    # --- cached decoding ---------------------------------------------------------------------------

    def new_cache(
        self,
        batch_size: int = 1,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> PooledCache:
        """Empty decoding state for one sequence of up to `max_len` bytes (default max_seq_len).

        One sequence only: rows of a batch close patches at different bytes, so
        their core caches would advance at different times. dtype is that of
        the KV caches (default: the autocast dtype if autocast is on, else the
        parameters'); the open-patch state keeps the parameters' dtype.
        """
        cfg = self.config
        if batch_size != 1:
            raise ValueError(f"cached decoding of a pooled model runs one sequence, got batch size {batch_size}")
        max_len = cfg.max_seq_len if max_len is None else max_len
        if not 1 <= max_len <= cfg.max_seq_len:
            raise ValueError(f"cache max_len must be in 1..{cfg.max_seq_len} (max_seq_len), got {max_len}")
        weight = self.input.embed.weight
        device = weight.device if device is None else torch.device(device)
        if dtype is None:
            autocast_on = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast_on else weight.dtype
        n_local = cfg.n_enc_layers + cfg.n_dec_layers
        local = KVCache(n_local, 1, cfg.local_heads, max_len, cfg.d_head_local, device=device, dtype=dtype)
        core = KVCache(cfg.core_depth, 1, cfg.global_heads, max_len, cfg.d_head_global, device=device, dtype=dtype)
        return PooledCache(local, core, cfg.d_local, weight.dtype)

    def _keep_open_patch(
        self,
        cache: PooledCache,
        ids: torch.Tensor,
        doc: torch.Tensor,
        closes: torch.Tensor,
        layout: PatchLayout,
        h: torch.Tensor,
        read: torch.Tensor,
    ) -> None:
        """After a prefill of T bytes: remember the bytes, their documents and the open patch."""
        t, p = ids.shape[1], layout.n_patches
        cache.ids[:t], cache.doc[:t] = ids[0], doc[0]
        cache.patch_doc[:p] = layout.patch_doc[0]
        cache.n_patches = p
        cache.closed_last = bool(closes[0, -1])
        cache.count = 0 if cache.closed_last else int(layout.patch_len[0, -1])
        cache.acc = h[0, t - cache.count :].sum(dim=0)  # (Dl,), zeros when no patch is open
        if not cache.closed_last:
            # The open last patch went through the core with the others; drop its
            # slot: it is computed again, with all its bytes, when it closes.
            cache.core.length = p - 1
        cache.read = read[:, -1:]  # (1, 1, Dl)

    def _step(self, ids: torch.Tensor, cache: PooledCache) -> torch.Tensor:
        """One byte (1, 1) after the cached ones -> the local decoder's output (1, 1, Dl)."""
        cfg = self.config
        t = cache.length
        token = int(ids[0, 0])
        new_doc = token == cfg.bos_id
        doc = int(cache.doc[t - 1]) + int(new_doc)
        cache.ids[t], cache.doc[t] = token, doc

        # Bytes t-1..t-K of this document, as preceding_ids gives them in a full window.
        k = cfg.context_bytes
        lo = max(0, t - k)
        earlier = cache.ids[lo:t].flip(0)  # (t - lo,) nearest first
        same = cache.doc[lo:t].flip(0) == doc
        before = torch.full((1, 1, k), cfg.pad_id, dtype=torch.long, device=ids.device)  # (1, 1, K)
        before[0, 0, : t - lo] = torch.where(same, earlier, cfg.pad_id)
        x = self.input(ids, before)  # (1, 1, Dl)

        keys = torch.arange(t + 1, device=ids.device)
        byte_mask = ((cache.doc[: t + 1] == doc) & (keys > t - cfg.local_window)).view(1, 1, 1, t + 1)
        for i, block in enumerate(self.encoder):
            x = block(x, self.local_rotary, byte_mask, cache.local, i)  # (1, 1, Dl)

        if cache.closed_last or new_doc:
            if new_doc and cache.count > 0:
                cache.patch_doc[cache.n_patches - 1] = -1  # cut short by this BOS: it never closes
            cache.n_patches += 1
            cache.acc = torch.zeros_like(cache.acc)
            cache.count = 0
        h = self.pool_norm(x)[0, 0]  # (Dl,)
        cache.acc = cache.acc + h
        cache.count += 1
        close = bool(self.boundaries.natural(ids, before[..., 0])) or cache.count == cfg.patch_cap
        if close:
            p = cache.n_patches - 1
            features = pool_open_patch(cache.acc, cache.count, h, cfg.pooling)  # (k*Dl,)
            patch = self.pool_proj(features.view(1, 1, -1)).to(x.dtype)  # (1, 1, Dg)
            cache.core.length = p  # skips the slot of a patch a BOS cut short
            cache.patch_doc[p] = doc
            patch_mask = (cache.patch_doc[: p + 1] == doc).view(1, 1, 1, p + 1)
            g = self._core(patch, patch_mask, cache.core)  # (1, 1, Dg)
            cache.read = self.unpool_proj(self.core_norm(g)).to(self.no_patch.dtype)  # (1, 1, Dl)
        elif new_doc:
            cache.read = self.no_patch.view(1, 1, -1)
        cache.closed_last = close
        x = x + cache.read

        n_enc = len(self.encoder)
        for i, block in enumerate(self.decoder):
            x = block(x, self.local_rotary, byte_mask, cache.local, n_enc + i)  # (1, 1, Dl)
        cache.local.advance(1)
        return x  # (1, 1, Dl)

    # --- bookkeeping ---------------------------------------------------------------------------------

    def num_params(self) -> int:
        """Number of parameters, tied and shared weights counted once."""
        return sum(p.numel() for p in self.parameters())

    def fit_boundaries(self, ids: Any, target_patch_len: float | None = None) -> float:
        """Fit the entropy rule to a token stream (e.g. a slice of the training split).

        Estimates the trigram entropy table and the threshold that gives
        `target_patch_len` ids per patch on `ids` (default: the config's
        `entropy_patch_len`, 6 or max_patch_len if smaller); both are buffers, so they are
        saved in checkpoints. Returns the mean patch length reached on `ids`.
        A few MB of text is plenty; the rule is a byte-pair lookup at run time.
        """
        if self.config.boundary_kind != "entropy":
            raise ValueError(f"only the entropy rule is fitted, this model uses {self.config.boundary!r}")
        ids = torch.as_tensor(ids).long().reshape(-1).cpu()
        table = fit_entropy_table(ids, self.config)
        target = self.config.patch_len_target if target_patch_len is None else target_patch_len
        threshold = fit_entropy_threshold(ids, self.config, table, target)
        self.boundaries.load_fit(table, threshold)
        return mean_patch_length(self, ids)
