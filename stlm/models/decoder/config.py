"""Configuration of the plain decoder-only transformer, and its exact parameter count.

One dataclass holds everything that decides the network's shape. Derived
fields (`d_head`, a defaulted `d_ff`) are computed and checked once here, so
the model never re-derives or re-validates anything in `forward`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stlm.models.config_dict import check_dropout, config_from_dict


def default_d_ff(d_model: int) -> int:
    """SwiGLU hidden width: 8/3 * d_model, rounded up to a multiple of 64.

    A gated MLP has three matrices instead of two, so 8/3 * D keeps its
    parameters and FLOPs equal to a classic 4 * D MLP (Shazeer 2020); the
    multiple of 64 keeps matmul tiles aligned on both CPU and GPU.
    """
    return 64 * math.ceil(8 * d_model / 3 / 64)


@dataclass(kw_only=True)
class DecoderConfig:
    """Shape of a `DecoderLM`. Keyword-only so presets and recipes read as named data."""

    vocab_size: int = 264  # the byte tokenizer's vocabulary (bytes + specials + sentinels)
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int | None = None  # None: default_d_ff(d_model), resolved in __post_init__
    max_seq_len: int = 1024  # longest context the rotary tables and KV caches cover
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True  # LM head shares the token embedding matrix
    init_std: float = 0.02
    mtp_heads: int = 0  # extra multi-token prediction heads (objective mtp:K sets K-1); 0: next-token only
    dropout: float = 0.0  # on each attention and MLP output while training: 0 to pretrain, ~0.1 to fine-tune

    d_head: int = field(init=False)  # derived: d_model // n_heads

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            _check_positive_int(name, getattr(self, name))
        if self.d_ff is None:
            self.d_ff = default_d_ff(self.d_model)
        _check_positive_int("d_ff", self.d_ff)
        if isinstance(self.mtp_heads, bool) or not isinstance(self.mtp_heads, int) or self.mtp_heads < 0:
            raise ValueError(f"DecoderConfig.mtp_heads must be an integer >= 0, got {self.mtp_heads!r}")
        for name in ("rope_theta", "norm_eps", "init_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"DecoderConfig.{name} must be a positive number, got {value!r}")
            setattr(self, name, float(value))
        self.dropout = check_dropout("DecoderConfig", self.dropout)
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"DecoderConfig.tie_embeddings must be true or false, got {self.tie_embeddings!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"DecoderConfig: d_model {self.d_model} must be divisible by n_heads {self.n_heads} "
                f"(each head gets d_model / n_heads dimensions)"
            )
        self.d_head = self.d_model // self.n_heads
        if self.d_head % 2:
            raise ValueError(
                f"DecoderConfig: head width d_model / n_heads = {self.d_head} must be even (rotary rotates pairs)"
            )

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments as plain data, with `d_ff` resolved; derived fields left out.

        `mtp_heads` and `dropout` only when set: a record without them reads as it did before they existed."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        for name in ("mtp_heads", "dropout"):
            if not data[name]:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecoderConfig:
        """Inverse of `to_dict`; unknown or missing keys raise a ValueError naming them."""
        return config_from_dict(cls, data)


def count_params(cfg: DecoderConfig) -> int:
    """Exact number of parameters of `DecoderLM(cfg)`, without building it.

    embedding V*D (the tied head adds nothing; an untied one adds V*D)
    + per layer: attention 4*D*D (fused qkv 3*D*D + output D*D)
                 + SwiGLU 3*D*F (gate and up 2*D*F + down F*D)
                 + two RMSNorm gains 2*D
    + final RMSNorm gain D
    + mtp_heads extra heads of D + 3*D*D each (`MultiTokenHeads`; they share the head).
    """
    d, f, v = cfg.d_model, cfg.d_ff, cfg.vocab_size
    assert f is not None  # resolved in __post_init__
    per_layer = 4 * d * d + 3 * d * f + 2 * d
    embeddings = v * d if cfg.tie_embeddings else 2 * v * d
    return embeddings + cfg.n_layers * per_layer + d + cfg.mtp_heads * (d + 3 * d * d)


def _check_positive_int(name: str, value: Any) -> None:
    # bool is an int subclass; `n_layers = true` in a recipe is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"DecoderConfig.{name} must be a positive integer, got {value!r}")
