"""Small configs, packed windows and fitted models shared by the pooled byte model tests."""

from __future__ import annotations

import functools

import torch

from stlm.models.byte_decoder import PooledByteConfig, PooledByteLM

V, PAD, BOS, EOS = 264, 256, 257, 258
RULES = ["space", "fixed:1", "fixed:3", "entropy"]

DOCS = [
    b"The cat sat on the mat.  It was a\tfine day, wasn't it?",
    b"Hello, world! Bytes -> patches -> core.",
    b"def f(x):\n    return x + 1  # supercalifragilistic",
]


def small_config(**overrides) -> PooledByteConfig:
    settings = dict(
        d_local=32,
        n_enc_layers=1,
        n_dec_layers=1,
        local_heads=2,
        local_window=16,
        d_global=48,
        n_global_layers=2,
        global_heads=2,
        hash_buckets=64,
        max_patch_len=6,
        max_seq_len=256,
    )
    settings.update(overrides)
    return PooledByteConfig(**settings)


def packed(*docs: bytes, eos_last: bool = True) -> list[int]:
    """BOS doc EOS BOS doc EOS ..., as the data loader packs documents."""
    ids: list[int] = []
    for i, doc in enumerate(docs):
        ids += [BOS, *doc]
        if eos_last or i < len(docs) - 1:
            ids.append(EOS)
    return ids


@functools.cache
def english_sample(n_bytes: int = 200_000) -> tuple[int, ...]:
    """Packed English prose (Python's help topics) for fitting and measuring boundaries."""
    from pydoc_data.topics import topics

    ids: list[int] = []
    for key in sorted(topics):
        ids += packed(topics[key].encode("utf-8"))
        if len(ids) >= n_bytes:
            break
    return tuple(ids[:n_bytes])


def small_model(
    boundary: str = "space", dtype: torch.dtype = torch.float64, seed: int = 0, **overrides
) -> PooledByteLM:
    """A random small model in eval mode; the no-patch vector is random so that
    "no closed patch yet" and a patch output differ visibly in the logits."""
    torch.manual_seed(seed)
    model = PooledByteLM(small_config(boundary=boundary, **overrides))
    if boundary == "entropy":
        model.fit_boundaries(english_sample(), target_patch_len=4.0)
    with torch.no_grad():
        model.no_patch.normal_()
    model = model.to(dtype).eval()
    if dtype == torch.float64:
        exact_rotary(model)
    return model


def exact_rotary(model: PooledByteLM) -> None:
    """Rotary tables computed in float64 (the model computes them in fp32).

    Rotary attention depends only on relative positions, but with fp32 tables
    that holds to ~1e-7. Moving a document to another offset (or giving an
    earlier document more patches) then changes its logits by ~1e-8, which
    would hide in the tolerance of a leak test; in float64 it is ~1e-15.
    """
    for rotary in (model.local_rotary, model.global_rotary):
        half = rotary.d_head // 2
        inv_freq = rotary.theta ** -(torch.arange(half, dtype=torch.float64) / half)
        angles = torch.outer(torch.arange(rotary.max_seq_len, dtype=torch.float64), inv_freq)
        rotary.cos, rotary.sin = angles.cos(), angles.sin()
