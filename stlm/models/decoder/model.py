"""Decoder-only transformer language model: the plain token-level baseline.

    ids (B, T) -> token embedding                                  (B, T, D)
               -> n_layers x pre-norm block:
                    x = x + dropout(attention(RMSNorm(x)))   causal, rotary positions
                    x = x + dropout(SwiGLU(RMSNorm(x)))      dropout: training only
               -> final RMSNorm -> LM head (tied to the embedding)  (B, T, V)

With `mtp_heads` (multi-token prediction), `forward(ids, heads=True)` also reads the
ids 2..K positions ahead from the same trunk through `MultiTokenHeads`,
sharing the final norm and LM head; `forward` is unchanged by them.

Over the byte tokenizer this is the "pooling off" baseline of the pooled byte
model; over a small BPE vocabulary it is the token-level baseline. The model
returns logits only: what it is trained to do (and the loss) belongs to the
objectives, and decoding loops live in `stlm.generation`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stlm.models.decoder.config import DecoderConfig
from stlm.models.layers import (
    CausalSelfAttention,
    KVCache,
    MultiTokenHeads,
    RMSNorm,
    RotaryEmbedding,
    RowPositions,
    SwiGLU,
    dropout,
)


class DecoderBlock(nn.Module):
    """One pre-norm transformer layer: attention then MLP, each added to the residual."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        assert cfg.d_ff is not None  # resolved by DecoderConfig.__post_init__
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_heads)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.d_ff)
        self.dropout = cfg.dropout

    def forward(
        self,
        x: torch.Tensor,
        rotary: RotaryEmbedding,
        cache: KVCache | None,
        layer: int,
        rows: RowPositions | None = None,
    ) -> torch.Tensor:
        p, training = self.dropout, self.training
        x = x + dropout(self.attn(self.attn_norm(x), rotary, cache, layer, rows=rows), p, training)  # (B, T, D)
        return x + dropout(self.mlp(self.mlp_norm(x)), p, training)  # (B, T, D)


class DecoderLM(nn.Module):
    """Causal language model: token ids (B, T) -> next-token logits (B, T, V)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        # One rotary table for all layers: every layer rotates by the same positions.
        self.rotary = RotaryEmbedding(config.d_head, config.max_seq_len, config.rope_theta)
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # Same Parameter object: one tensor, one gradient, one optimizer state,
            # and `parameters()` yields it once.
            self.head.weight = self.embed.weight
        self.mtp = MultiTokenHeads(config.d_model, config.mtp_heads, config.norm_eps) if config.mtp_heads else None
        self.init_weights()

    def init_weights(self) -> None:
        """(Re)initialise every parameter and buffer in place.

        Called by the constructor; call it again after materialising a model
        built on the meta device (`model.to_empty(device=...)`), which leaves
        parameters and the rotary tables uninitialised.

        Weights: Normal(0, init_std). The two projections of each layer that
        write into the residual stream (attention output, MLP down) get
        init_std / sqrt(2 * n_layers) (GPT-2), so the residual's variance at
        initialisation does not grow with depth. Norm gains start at 1.
        """
        if self.config.tie_embeddings:
            # `to_empty()` gives every module its own new tensor, which silently
            # unties a shared weight; tie it again before initialising.
            self.head.weight = self.embed.weight
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        nn.init.normal_(self.embed.weight, mean=0.0, std=std)
        if not self.config.tie_embeddings:
            nn.init.normal_(self.head.weight, mean=0.0, std=std)
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, mean=0.0, std=std)
            nn.init.normal_(block.attn.out.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.gate_up.weight, mean=0.0, std=std)
            nn.init.normal_(block.mlp.down.weight, mean=0.0, std=residual_std)
            block.attn_norm.reset_parameters()
            block.mlp_norm.reset_parameters()
        self.norm.reset_parameters()
        self.rotary.reset_parameters()
        if self.mtp is not None:
            self.mtp.reset_parameters(std, std / math.sqrt(2))

    def forward(
        self,
        ids: torch.Tensor,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        *,
        heads: bool = False,
    ) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, V), in whatever dtype autocast gives the head.

        `heads=True` (a model with `mtp_heads`) gives every multi-token head
        instead, (B, T, K, V): [..., 0, :] the usual logits, [..., k-1, :] the
        id k positions ahead. It is a flag of `forward`, not another method, so
        training reaches it through DDP and torch.compile wrappers.

        Without a cache, the T tokens are positions 0..T-1. With a cache, they
        continue it: positions cache.length .. cache.length + T - 1; their keys
        and values are appended and the cache advances by T. A prompt prefill
        (T > 1) and single-token steps give the same logits as one full forward.

        `positions` (long (B,), with a cache) starts each row at its own
        position instead, writing the cache slots of those numbers and seeing
        slots 0 .. its own position: batched generation of prompts of different
        lengths. The cache's length becomes the highest slot written + 1.
        """
        x = self._trunk(ids, cache, positions)  # (B, T, D)
        if heads:
            if self.mtp is None:
                raise ValueError("this model has no multi-token heads (config.mtp_heads is 0)")
            x = torch.cat([x[:, :, None], self.mtp(x)], dim=2)  # (B, T, 1, D) + (B, T, K-1, D) -> (B, T, K, D)
        return self.head(self.norm(x))  # (B, T, [K,] D) -> (B, T, [K,] V)

    def _trunk(self, ids: torch.Tensor, cache: KVCache | None, positions: torch.Tensor | None) -> torch.Tensor:
        """ids (B, T) -> the last block's output (B, T, D), before the final norm."""
        if ids.ndim != 2:
            raise ValueError(f"ids must be (batch, tokens), got shape {tuple(ids.shape)}")
        b, t = ids.shape
        rows = None
        if positions is not None:
            if cache is None or tuple(positions.shape) != (b,):
                raise ValueError(f"positions need a cache and shape ({b},), got {tuple(positions.shape)}")
            rows = RowPositions(positions, t)
        start = cache.length if cache is not None else 0
        if rows is not None:
            start = rows.end - t
        if start + t > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + t} tokens exceeds max_seq_len {self.config.max_seq_len}")
        if cache is not None and cache.batch_size != b:
            raise ValueError(f"cache was made for batch size {cache.batch_size}, got ids of batch size {b}")

        x = self.embed(ids)  # (B, T) -> (B, T, D)
        for layer, block in enumerate(self.blocks):
            x = block(x, self.rotary, cache, layer, rows)  # (B, T, D)
        if rows is not None:
            cache.length = max(cache.length, rows.end)  # type: ignore[union-attr]
        elif cache is not None:
            cache.advance(t)
        return x

    def new_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty KV cache for `batch_size` sequences of up to `max_len` tokens.

        max_len defaults to config.max_seq_len; device to the model's. dtype
        defaults to what attention will produce: the autocast dtype when
        autocast is on for that device at this call, else the parameters' dtype.
        """
        cfg = self.config
        max_len = cfg.max_seq_len if max_len is None else max_len
        if not 1 <= max_len <= cfg.max_seq_len:
            raise ValueError(f"cache max_len must be in 1..{cfg.max_seq_len} (max_seq_len), got {max_len}")
        weight = self.embed.weight
        device = weight.device if device is None else torch.device(device)
        if dtype is None:
            autocast_on = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast_on else weight.dtype
        return KVCache(cfg.n_layers, batch_size, cfg.n_heads, max_len, cfg.d_head, device=device, dtype=dtype)

    def num_params(self) -> int:
        """Number of parameters, a tied embedding/head counted once."""
        return sum(p.numel() for p in self.parameters())
