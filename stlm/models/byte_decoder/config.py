"""Configuration of the pooled byte language model, its exact parameter count and breakdown.

One dataclass holds everything that decides the network's shape and its
patching. Derived fields (head widths, defaulted feed-forward widths, the
parsed boundary rule, the core's layer schedule) are computed and checked
once in `__post_init__`, so the model never re-derives anything in `forward`.

Widths: "local" is the byte-level encoder/decoder (narrow, runs on every
byte), "global" is the patch-level core (deep-narrow, runs once per patch).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stlm.models.config_dict import check_dropout, config_from_dict

BOUNDARY_KINDS = ("space", "fixed", "entropy")
DEFAULT_PATCH_LEN = 6.0  # entropy patches: mean bytes per patch unless entropy_patch_len says otherwise
POOLING_KINDS = ("mean_last", "mean", "last")
REPEAT_MODES = ("block", "loop")


def default_d_ff(d_model: int) -> int:
    """SwiGLU hidden width 8/3 * D rounded up to a multiple of 64 (same rule as the decoder family).

    Three matrices instead of two: 8/3 * D keeps parameters and FLOPs equal to a
    classic 4 * D MLP; the multiple of 64 keeps matmul tiles aligned.
    """
    return 64 * math.ceil(8 * d_model / 3 / 64)


@dataclass(kw_only=True)
class PooledByteConfig:
    """Shape of a `PooledByteLM`. Keyword-only so presets and recipes read as named data."""

    vocab_size: int = 264  # the byte tokenizer's vocabulary
    pad_id: int = 256  # stands in for "no byte" (before the window or the document starts)
    bos_id: int = 257  # starts a document: documents never share a patch or attend to each other
    eos_id: int = 258  # ends a document: always closes a patch

    # Local byte-level stack (encoder before pooling, decoder after unpooling).
    d_local: int
    n_enc_layers: int = 1
    n_dec_layers: int = 2
    local_heads: int
    local_window: int = 256  # sliding window: a byte attends to itself and the 255 bytes before it
    d_ff_local: int | None = None  # None: default_d_ff(d_local)

    # Global patch-level core.
    d_global: int
    n_global_layers: int
    global_heads: int
    d_ff_global: int | None = None  # None: default_d_ff(d_global)
    share_ffn: bool = False  # one SwiGLU shared by every core layer (STLM paper)
    repeat_blocks: int = 1  # each unique core block is applied this many times
    repeat_mode: str = "block"  # "block": A A B B (MobileLLM); "loop": A B A B (the whole stack looped)

    # Patching.
    boundary: str = "space"  # "space" | "fixed:N" | "entropy" (see boundaries.py)
    max_patch_len: int = 12  # cap on bytes per patch for "space" and "entropy"
    entropy_patch_len: float | None = None  # "entropy": mean bytes per patch to fit to; None: min(6, max_patch_len)
    pooling: str = "mean_last"  # patch vector: Linear(mean || last byte), or Linear(mean), Linear(last)

    # Byte input.
    hash_ngrams: tuple[int, ...] = (2, 3, 4)  # hashed n-gram embeddings added to each byte (BLT); () disables
    hash_buckets: int = 2048  # rows per n-gram size

    tie_head: bool = True  # byte head shares the byte embedding matrix
    max_seq_len: int = 1024  # longest window in bytes (rotary tables, caches)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    mtp_heads: int = 0  # extra multi-token prediction heads on the byte stream (objective mtp:K sets K-1)
    dropout: float = 0.0  # on each block's attention and MLP output while training: 0 to pretrain, ~0.1 to fine-tune

    # Derived in __post_init__.
    d_head_local: int = field(init=False)
    d_head_global: int = field(init=False)
    boundary_kind: str = field(init=False)  # "space" | "fixed" | "entropy"
    patch_cap: int = field(init=False)  # bytes after which a patch is always closed (N for fixed:N)
    core_schedule: tuple[int, ...] = field(init=False)  # unique core block applied at each depth
    context_bytes: int = field(init=False)  # preceding bytes the input layer looks at (n-grams, boundary rule)
    patch_len_target: float = field(init=False)  # entropy_patch_len resolved: what fit_boundaries aims at

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "d_local",
            "n_enc_layers",
            "n_dec_layers",
            "local_heads",
            "local_window",
            "d_global",
            "n_global_layers",
            "global_heads",
            "repeat_blocks",
            "max_patch_len",
            "max_seq_len",
        ):
            _check_positive_int(name, getattr(self, name))
        if isinstance(self.mtp_heads, bool) or not isinstance(self.mtp_heads, int) or self.mtp_heads < 0:
            raise ValueError(f"PooledByteConfig.mtp_heads must be an integer >= 0, got {self.mtp_heads!r}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"PooledByteConfig.{name} must be an id below vocab_size {self.vocab_size}, got {value!r}"
                )
        if len({self.pad_id, self.bos_id, self.eos_id}) != 3:
            raise ValueError("PooledByteConfig: pad_id, bos_id and eos_id must be three different ids")
        if self.d_ff_local is None:
            self.d_ff_local = default_d_ff(self.d_local)
        if self.d_ff_global is None:
            self.d_ff_global = default_d_ff(self.d_global)
        _check_positive_int("d_ff_local", self.d_ff_local)
        _check_positive_int("d_ff_global", self.d_ff_global)
        for name in ("rope_theta", "norm_eps", "init_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"PooledByteConfig.{name} must be a positive number, got {value!r}")
            setattr(self, name, float(value))
        self.dropout = check_dropout("PooledByteConfig", self.dropout)
        for name in ("tie_head", "share_ffn"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"PooledByteConfig.{name} must be true or false, got {getattr(self, name)!r}")
        self.d_head_local = _head_width("local", self.d_local, self.local_heads)
        self.d_head_global = _head_width("global", self.d_global, self.global_heads)
        _check_choice("pooling", self.pooling, POOLING_KINDS)
        _check_choice("repeat_mode", self.repeat_mode, REPEAT_MODES)

        self.boundary_kind, self.patch_cap = _parse_boundary(self.boundary, self.max_patch_len)
        value = self.entropy_patch_len
        if value is None:
            self.patch_len_target = min(DEFAULT_PATCH_LEN, float(self.max_patch_len))
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= self.max_patch_len:
            raise ValueError(
                f"PooledByteConfig.entropy_patch_len must be a number from 1 to max_patch_len "
                f"({self.max_patch_len}), got {value!r}"
            )
        else:
            self.entropy_patch_len = self.patch_len_target = float(value)

        # Recipes and JSON give lists; a tuple keeps the config hashable and comparable.
        if isinstance(self.hash_ngrams, (str, bytes)) or not isinstance(self.hash_ngrams, (tuple, list)):
            raise ValueError(f"PooledByteConfig.hash_ngrams must be a list of n-gram sizes, got {self.hash_ngrams!r}")
        self.hash_ngrams = tuple(self.hash_ngrams)
        for n in self.hash_ngrams:
            if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= 8:
                raise ValueError(f"PooledByteConfig.hash_ngrams: sizes must be integers in 2..8, got {n!r}")
        if len(set(self.hash_ngrams)) != len(self.hash_ngrams):
            raise ValueError(f"PooledByteConfig.hash_ngrams has repeated sizes: {self.hash_ngrams}")
        _check_positive_int("hash_buckets", self.hash_buckets)

        n, k = self.n_global_layers, self.repeat_blocks
        if self.repeat_mode == "block":
            self.core_schedule = tuple(i for i in range(n) for _ in range(k))
        else:
            self.core_schedule = tuple(i for _ in range(k) for i in range(n))
        # The boundary rules look one byte back; an n-gram looks n - 1 bytes back.
        self.context_bytes = max([1] + [n - 1 for n in self.hash_ngrams])

    @property
    def core_depth(self) -> int:
        """Core layers applied per patch (unique layers times repeats)."""
        return len(self.core_schedule)

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments as plain data, widths resolved; derived fields left out."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        data["hash_ngrams"] = list(self.hash_ngrams)  # JSON has no tuples
        for name in ("mtp_heads", "dropout"):  # unset: records read as they did before these fields
            if not data[name]:
                del data[name]
        if self.entropy_patch_len is None:  # the default: records read as they did before the field
            del data["entropy_patch_len"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PooledByteConfig:
        """Inverse of `to_dict`; unknown or missing keys raise a ValueError naming them."""
        return config_from_dict(cls, data)


# --- parameter counts ---------------------------------------------------------------------------


def _block_params(d: int, d_ff: int, *, with_mlp: bool = True) -> int:
    # attention 4*D*D (fused qkv + output) + two RMSNorm gains, + SwiGLU 3*D*F unless shared
    return 4 * d * d + 2 * d + (3 * d * d_ff if with_mlp else 0)


def param_breakdown(cfg: PooledByteConfig) -> dict[str, Any]:
    """Exact parameters of `PooledByteLM(cfg)` by part, and what each sharing option removes.

    Parts (their sum is "total"; the hash tables are counted in it but shown apart):
        embeddings      byte embedding V*Dl
        hash_tables     len(hash_ngrams) * hash_buckets * Dl
        local_encoder   n_enc_layers blocks at Dl
        pooling         norm Dl + Linear(k*Dl -> Dg) (k = 2 for mean_last)
                        + unpool Linear(Dg -> Dl) + the "no closed patch yet" vector Dl
        core            unique core blocks at Dg (one FFN if shared) + final norm Dg
        local_decoder   n_dec_layers blocks at Dl + final norm Dl
        head            0 when tied to the byte embedding, else V*Dl
        mtp_heads       (only with mtp_heads > 0) per extra head Dl + 3*Dl*Dl (`MultiTokenHeads`)
    "sharing" gives, for each option, how many parameters it removes compared
    with the same network without that sharing (whether or not it is on here):
        tie_head        V*Dl
        share_ffn       (n_global_layers - 1) * 3*Dg*Fg
        repeat_blocks   the extra unique blocks an unrepeated core of the same depth would have
    """
    dl, dg, v = cfg.d_local, cfg.d_global, cfg.vocab_size
    fl, fg = cfg.d_ff_local, cfg.d_ff_global
    assert fl is not None and fg is not None  # resolved in __post_init__
    n_core = cfg.n_global_layers
    pool_in = 2 * dl if cfg.pooling == "mean_last" else dl
    core_ffn = 3 * dg * fg
    core = n_core * _block_params(dg, fg, with_mlp=not cfg.share_ffn) + dg
    if cfg.share_ffn:
        core += core_ffn
    unique_block = _block_params(dg, fg, with_mlp=not cfg.share_ffn)
    parts = {
        "embeddings": v * dl,
        "hash_tables": len(cfg.hash_ngrams) * cfg.hash_buckets * dl,
        "local_encoder": cfg.n_enc_layers * _block_params(dl, fl),
        "pooling": dl + pool_in * dg + dg * dl + dl,
        "core": core,
        "local_decoder": cfg.n_dec_layers * _block_params(dl, fl) + dl,
        "head": 0 if cfg.tie_head else v * dl,
    }
    if cfg.mtp_heads:
        parts["mtp_heads"] = cfg.mtp_heads * (dl + 3 * dl * dl)
    sharing = {
        "tie_head": v * dl,
        "share_ffn": (n_core - 1) * core_ffn,
        "repeat_blocks": (cfg.core_depth - n_core) * unique_block,
    }
    return {**parts, "total": sum(parts.values()), "sharing": sharing}


@dataclass(frozen=True)
class Sharing:
    """One sharing option of a config, as `stlm models --parts` shows it."""

    setting: str  # "on" / "off"; repeat_blocks: "x2 block", "x3 loop", "off"
    on: bool
    saves: int  # on: parameters it removes here; off: what switching it on would remove


def sharing_options(cfg: PooledByteConfig) -> dict[str, Sharing]:
    """Each sharing option's setting and the parameters it removes, whether it is on or off.

    On: what it removes here, against the same network without it (the
    "sharing" of `param_breakdown`). Off: what switching it on would remove;
    for repeat_blocks that is repeat_blocks = 2, each unique core block applied
    twice (MobileLLM), against an unrepeated core of that doubled depth. Block
    and loop order share the same blocks, so they save the same.

    With share_ffn and repeat_blocks both on, each saving is counted against
    the other option still on, so they add up to less than both remove
    together (`sharing_total`): the repeated blocks' FFNs are shared already.
    """
    sharing = param_breakdown(cfg)["sharing"]
    twice = param_breakdown(dataclasses.replace(cfg, repeat_blocks=2))["sharing"]["repeat_blocks"]
    repeated = cfg.repeat_blocks > 1
    return {
        "tie_head": Sharing("on" if cfg.tie_head else "off", cfg.tie_head, sharing["tie_head"]),
        "share_ffn": Sharing("on" if cfg.share_ffn else "off", cfg.share_ffn, sharing["share_ffn"]),
        "repeat_blocks": Sharing(
            f"x{cfg.repeat_blocks} {cfg.repeat_mode}" if repeated else "off",
            repeated,
            sharing["repeat_blocks"] if repeated else twice,
        ),
    }


def sharing_total(cfg: PooledByteConfig) -> int:
    """What the sharing options that are on remove together: against an untied, unshared core of the same depth."""
    unshared = dataclasses.replace(
        cfg, tie_head=False, share_ffn=False, n_global_layers=cfg.core_depth, repeat_blocks=1, repeat_mode="block"
    )
    return count_params(unshared) - count_params(cfg)


def count_params(cfg: PooledByteConfig) -> int:
    """Exact number of parameters of `PooledByteLM(cfg)`, without building it (tied weights once)."""
    return param_breakdown(cfg)["total"]


# --- checks ------------------------------------------------------------------------------------


def _parse_boundary(boundary: Any, max_patch_len: int) -> tuple[str, int]:
    """'space' | 'entropy' | 'fixed:N' -> (kind, cap in bytes)."""
    if not isinstance(boundary, str):
        raise ValueError(f"PooledByteConfig.boundary must be a string, got {boundary!r}")
    kind, _, arg = boundary.partition(":")
    if kind == "fixed":
        if not arg.isdigit() or int(arg) < 1:
            raise ValueError(
                f"PooledByteConfig.boundary {boundary!r}: write fixed:N with N a positive integer, e.g. fixed:4"
            )
        return "fixed", int(arg)
    if kind in ("space", "entropy") and not arg:
        return kind, max_patch_len
    raise ValueError(f"PooledByteConfig.boundary must be 'space', 'entropy' or 'fixed:N', got {boundary!r}")


def _head_width(stack: str, d: int, heads: int) -> int:
    if d % heads:
        raise ValueError(f"PooledByteConfig: d_{stack} {d} must be divisible by {stack}_heads {heads}")
    d_head = d // heads
    if d_head % 2:
        raise ValueError(f"PooledByteConfig: {stack} head width {d_head} must be even (rotary rotates pairs)")
    return d_head


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"PooledByteConfig.{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_positive_int(name: str, value: Any) -> None:
    # bool is an int subclass; `n_enc_layers = true` in a recipe is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"PooledByteConfig.{name} must be a positive integer, got {value!r}")
