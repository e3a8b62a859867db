"""Configuration of the T5 encoder-decoder, its exact parameter count, and HF config.json mapping.

One dataclass holds everything that decides the network's shape and its
special token ids, in the project's vocabulary (`d_model`, `d_head`,
`n_layers`, ...). Derived fields are computed and checked once here, so the
model never re-derives or re-validates anything in `forward`.

Hugging Face's names differ (`d_kv`, `num_layers`, `feed_forward_proj`, ...);
`from_hf_config` / `to_hf_config` translate a config.json in both directions.
They are plain dict work: nothing here imports transformers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stlm.errors import UserError
from stlm.models.config_dict import check_dropout, config_from_dict

FF_KINDS = ("relu", "gated-gelu")

# HF feed_forward_proj <-> our ff_kind. "gated-gelu" is the tanh-approximated
# GELU of T5 v1.1 (HF maps it to "gelu_new"), not the exact erf GELU.
_HF_FF = {"relu": "relu", "gated-gelu": "gated-gelu"}

# model_type values whose checkpoints have exactly this architecture: mT5 is
# T5 v1.1 with a bigger vocabulary. umT5 and LongT5 differ (per-layer or local
# position bias) and are refused rather than loaded wrongly.
HF_MODEL_TYPES = ("t5", "mt5")
HF_ARCHITECTURES = ("T5ForConditionalGeneration", "MT5ForConditionalGeneration", "T5WithLMHeadModel")


@dataclass(kw_only=True)
class T5Config:
    """Shape of a `T5Model`. Keyword-only so presets and recipes read as named data."""

    vocab_size: int = 32128  # 32,000 SentencePiece pieces + 100 sentinels, padded to a multiple of 128
    d_model: int
    d_head: int = 64  # HF's d_kv; n_heads * d_head need not equal d_model
    n_heads: int
    d_ff: int
    n_layers: int  # encoder layers
    n_decoder_layers: int | None = None  # None: same as n_layers, resolved in __post_init__
    ff_kind: str = "relu"  # "relu" (T5 v1.0, T5-Efficient) or "gated-gelu" (T5 v1.1, mT5)
    tie_embeddings: bool = True  # LM head = shared embedding, decoder output scaled by d_model**-0.5
    rel_buckets: int = 32  # relative position buckets per direction pair
    rel_max_distance: int = 128  # distances at or beyond this share the last bucket
    norm_eps: float = 1e-6
    dropout: float = 0.0  # 0.1 for fine-tuning, 0.0 in pretraining
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_id: int = 0
    max_seq_len: int = 512  # informational: relative positions have no hard limit

    d_attn: int = field(init=False)  # derived: n_heads * d_head, the width q, k, v project to

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "d_model",
            "d_head",
            "n_heads",
            "d_ff",
            "n_layers",
            "rel_buckets",
            "rel_max_distance",
            "max_seq_len",
        ):
            _check_int(name, getattr(self, name), minimum=1)
        if self.n_decoder_layers is None:
            self.n_decoder_layers = self.n_layers
        _check_int("n_decoder_layers", self.n_decoder_layers, minimum=1)
        for name in ("pad_id", "eos_id", "decoder_start_id"):
            _check_int(name, getattr(self, name), minimum=0)
            if getattr(self, name) >= self.vocab_size:
                raise ValueError(
                    f"T5Config.{name} {getattr(self, name)} is outside the vocabulary (size {self.vocab_size})"
                )
        if self.ff_kind not in FF_KINDS:
            raise ValueError(f"T5Config.ff_kind must be one of {', '.join(FF_KINDS)}, got {self.ff_kind!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"T5Config.tie_embeddings must be true or false, got {self.tie_embeddings!r}")
        if isinstance(self.norm_eps, bool) or not isinstance(self.norm_eps, (int, float)) or not self.norm_eps > 0:
            raise ValueError(f"T5Config.norm_eps must be a positive number, got {self.norm_eps!r}")
        self.norm_eps = float(self.norm_eps)
        self.dropout = check_dropout("T5Config", self.dropout)
        # The bucket function gives half of a direction's buckets to exact
        # distances and the rest to log-spaced ones up to rel_max_distance; the
        # log spacing needs the distance to exceed the exact range (buckets / 2
        # in the one-directional decoder, the larger of the two).
        if self.rel_buckets < 4:
            raise ValueError(f"T5Config.rel_buckets must be at least 4, got {self.rel_buckets}")
        if self.rel_max_distance <= self.rel_buckets // 2:
            raise ValueError(
                f"T5Config.rel_max_distance {self.rel_max_distance} must exceed rel_buckets / 2 "
                f"= {self.rel_buckets // 2} (the distances that get a bucket each)"
            )
        self.d_attn = self.n_heads * self.d_head

    @property
    def gated(self) -> bool:
        return self.ff_kind == "gated-gelu"

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments as plain data, n_decoder_layers resolved; derived fields left out."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> T5Config:
        """Inverse of `to_dict`; unknown or missing keys raise a ValueError naming them."""
        return config_from_dict(cls, data)

    @classmethod
    def from_hf_config(cls, data: Mapping[str, Any]) -> T5Config:
        """Our config from a Hugging Face T5 config.json (as a dict).

        A config of another architecture, or a setting this model does not
        implement, raises UserError naming it. Tying: old configs say
        `tie_word_embeddings` (absent = tied); transformers 5 also writes
        `scale_decoder_outputs`, and ties the matrices even when it is false.
        What decides the logits is the scaling, so a config that does not
        scale becomes an untied model here (the loader copies the shared
        matrix into the head when the checkpoint has no separate one).
        """
        if not isinstance(data, Mapping):
            raise UserError(f"a Hugging Face config must be a JSON object, got {type(data).__name__}")
        model_type = data.get("model_type")
        architectures = data.get("architectures") or []
        if model_type is not None and model_type not in HF_MODEL_TYPES:
            raise UserError(
                f"config.json describes a {model_type!r} model ({', '.join(architectures) or 'no architectures'}), "
                f"not T5; expected model_type {' or '.join(map(repr, HF_MODEL_TYPES))}"
            )
        if architectures and not set(architectures) & set(HF_ARCHITECTURES):
            raise UserError(
                f"config.json architecture {', '.join(map(str, architectures))} is not a T5 encoder-decoder with "
                f"an LM head (expected one of {', '.join(HF_ARCHITECTURES)})"
            )
        if model_type is None and not architectures:
            raise UserError("config.json has neither model_type nor architectures; cannot tell it is a T5 config")
        ff = data.get("feed_forward_proj", "relu")
        if ff not in _HF_FF:
            raise UserError(f"config.json feed_forward_proj {ff!r} is not supported (supported: {', '.join(_HF_FF)})")
        tied = data.get("tie_word_embeddings", True) is not False
        scaled = data.get("scale_decoder_outputs", tied)
        eos = data.get("eos_token_id", 1)
        if isinstance(eos, list):  # HF allows several end ids; generation stops at the first here
            eos = eos[0]
        settings = dict(
            vocab_size=data.get("vocab_size", 32128),
            d_model=data.get("d_model", 512),
            d_head=data.get("d_kv", 64),
            n_heads=data.get("num_heads", 8),
            d_ff=data.get("d_ff", 2048),
            n_layers=data.get("num_layers", 6),
            n_decoder_layers=data.get("num_decoder_layers"),
            ff_kind=_HF_FF[ff],
            tie_embeddings=bool(scaled),
            rel_buckets=data.get("relative_attention_num_buckets", 32),
            rel_max_distance=data.get("relative_attention_max_distance", 128),
            norm_eps=data.get("layer_norm_epsilon", 1e-6),
            dropout=data.get("dropout_rate", 0.1),
            pad_id=_or(data.get("pad_token_id"), 0),
            eos_id=_or(eos, 1),
            decoder_start_id=_or(data.get("decoder_start_token_id"), _or(data.get("pad_token_id"), 0)),
            max_seq_len=data.get("n_positions", 512),
        )
        try:
            return cls(**settings)
        except ValueError as exc:
            raise UserError(f"config.json is not a valid T5 config: {exc}") from None

    def to_hf_config(self) -> dict[str, Any]:
        """A Hugging Face T5 config.json (as a dict) that transformers builds this network from."""
        return {
            "architectures": ["T5ForConditionalGeneration"],
            "model_type": "t5",
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "d_kv": self.d_head,
            "d_ff": self.d_ff,
            "num_heads": self.n_heads,
            "num_layers": self.n_layers,
            "num_decoder_layers": self.n_decoder_layers,
            "feed_forward_proj": self.ff_kind,
            "tie_word_embeddings": self.tie_embeddings,
            "relative_attention_num_buckets": self.rel_buckets,
            "relative_attention_max_distance": self.rel_max_distance,
            "layer_norm_epsilon": self.norm_eps,
            "dropout_rate": self.dropout,
            "initializer_factor": 1.0,
            "pad_token_id": self.pad_id,
            "eos_token_id": self.eos_id,
            "decoder_start_token_id": self.decoder_start_id,
            "n_positions": self.max_seq_len,
            "is_encoder_decoder": True,
            "use_cache": True,
        }


def count_params(cfg: T5Config) -> int:
    """Exact number of parameters of `T5Model(cfg)`, without building it.

    D = d_model, I = n_heads * d_head, F = d_ff, V = vocab_size:
      attention (q, k, v, o)           4*D*I
      FFN                              2*D*F (ReLU) or 3*D*F (gated: two input matrices)
      encoder layer = attention + FFN + 2 norm gains (2D)
      decoder layer = self + cross attention + FFN + 3 norm gains (3D)
      relative bias, first block of each stack only: 2 * buckets * heads
      final norms 2D; shared embedding V*D; an untied LM head another V*D.
    """
    d, i, f, v = cfg.d_model, cfg.d_attn, cfg.d_ff, cfg.vocab_size
    attention = 4 * d * i
    ffn = (3 if cfg.gated else 2) * d * f
    encoder_layer = attention + ffn + 2 * d
    decoder_layer = 2 * attention + ffn + 3 * d
    assert cfg.n_decoder_layers is not None  # resolved in __post_init__
    return (
        cfg.n_layers * encoder_layer
        + cfg.n_decoder_layers * decoder_layer
        + 2 * cfg.rel_buckets * cfg.n_heads
        + 2 * d
        + v * d * (1 if cfg.tie_embeddings else 2)
    )


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _check_int(name: str, value: Any, minimum: int) -> None:
    # bool is an int subclass; `n_layers = true` in a recipe is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"T5Config.{name} must be an integer >= {minimum}, got {value!r}")
