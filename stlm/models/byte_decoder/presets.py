"""Named sizes of the pooled byte family, as plain data.

Sizes follow the design table (core + local near the nominal size; the hashed
n-gram tables are shown apart in `param_breakdown` but counted in the total).
Head width 64 everywhere (32 in the tiny debug size). Exact counts, checked in
tests/models/byte_decoder/test_params.py:

    preset                       total   hash tables   without them   shape
    pooled-tiny                837,440        49,152        788,288   local 64 (1+1), core 128 x 3
    pooled-10m              11,636,608     1,179,648     10,456,960   local 192 (1+2), core 320 x 7
    pooled-tiny-entropy        837,440        49,152        788,288   the tiny size, entropy boundaries
    pooled-10m-entropy      11,636,608     1,179,648     10,456,960   entropy boundaries (fitted at the start of training)
    pooled-10m-fixed4       11,636,608     1,179,648     10,456,960   the same, a patch every 4 bytes
    pooled-10m-unpooled     11,636,608     1,179,648     10,456,960   the same, fixed:1
    pooled-10m-hash         11,574,208     4,423,680      7,150,528   entropy, 7,680 hash rows, core 256 x 7
    pooled-10m-hash-long    11,574,208     4,423,680      7,150,528   the same, 8-byte entropy patches (cap 16)
    pooled-10m-hash-space   11,574,208     4,423,680      7,150,528   the same, a patch per word (space rule, cap 12)
    pooled-10m-hash-long-3to6  11,574,208  4,423,680      7,150,528   hash-long with hashed 3- to 6-grams, 5,760 rows each
    pooled-10m-hash-long-3to8  11,574,208  4,423,680      7,150,528   hash-long with hashed 3- to 8-grams, 3,840 rows each
    pooled-50m              54,730,240     3,932,160     50,798,080   local 320 (2+3), core 576 x 11
    pooled-50m-unpooled     54,730,240     3,932,160     50,798,080
    pooled-100m            105,999,744     9,437,184     96,562,560   local 384 (2+4), core 768 x 12
    pooled-100m-unpooled   105,999,744     9,437,184     96,562,560

All use the space rule (max 12 bytes per patch, ~6.6 bytes per patch on
English prose) unless named otherwise.

The "-unpooled" baselines are the same stack with patch = 1 byte, so the core
parameters match exactly and only the patching differs. A token-level
baseline over a small BPE vocabulary with the same core parameters belongs to
the decoder family (it needs a BPE tokenizer; another issue).

The "-entropy" presets need their rule fitted to the training text before
step 0 (`stlm train` does it; `PooledByteLM.fit_boundaries` otherwise), to a
mean of `entropy_patch_len` bytes per patch (unset: 6, or the cap if smaller); any preset takes
`boundary="entropy"` the same way.

`pooled-10m-hash` is the best pooled model of the equal-parameter ladder
(docs/pooling-ladder.md): the same total as pooled-10m, but 3.75x the hashed
n-gram rows (BLT's hash embeddings: a lookup costs no FLOPs) and a narrower
core (256 wide, 7 layers) to pay for them. Its total, not its core, is what
the "10m" names. `pooled-10m-hash-long` is the same model with longer entropy
patches (fitted to 8 bytes on average, cap 16): the core runs less often, so
the same FLOPs buy more text. `pooled-10m-hash-space` is the same model with
word-boundary patches (SpaceByte's rule): level with it on the ladder's
validation split at equal FLOPs, lower on WikiText-2, and nothing to fit
before training; its patches are shorter, so each byte costs more FLOPs.
`pooled-10m-hash-long-3to6` spends the same hash rows on longer n-grams
(sizes 3-6, 5,760 rows each, instead of 2-4 with 7,680), as BLT does;
`pooled-10m-hash-long-3to8` on sizes 3-8 (3,840 rows each), BLT's own range.
"""

from __future__ import annotations

import dataclasses

from stlm.models.byte_decoder.config import PooledByteConfig

_TINY = PooledByteConfig(
    d_local=64,
    n_enc_layers=1,
    n_dec_layers=1,
    local_heads=2,
    d_global=128,
    n_global_layers=3,
    global_heads=4,
    hash_buckets=256,
)
_10M = PooledByteConfig(
    d_local=192,
    n_enc_layers=1,
    n_dec_layers=2,
    local_heads=3,
    d_global=320,
    n_global_layers=7,
    global_heads=5,
    hash_buckets=2048,
)
_50M = PooledByteConfig(
    d_local=320,
    n_enc_layers=2,
    n_dec_layers=3,
    local_heads=5,
    d_global=576,
    n_global_layers=11,
    global_heads=9,
    hash_buckets=4096,
)
_100M = PooledByteConfig(
    d_local=384,
    n_enc_layers=2,
    n_dec_layers=4,
    local_heads=6,
    d_global=768,
    n_global_layers=12,
    global_heads=12,
    hash_buckets=8192,
)
# Entropy patches, 7,680 rows per n-gram size, the core re-sized so the total matches pooled-10m's (-0.5%).
_10M_HASH = PooledByteConfig(
    d_local=192,
    n_enc_layers=1,
    n_dec_layers=2,
    local_heads=3,
    d_global=256,
    n_global_layers=7,
    global_heads=4,
    hash_buckets=7680,
    boundary="entropy",
)

_10M_HASH_LONG = dataclasses.replace(_10M_HASH, entropy_patch_len=8.0, max_patch_len=16)

PRESETS: dict[str, PooledByteConfig] = {
    "pooled-tiny": _TINY,
    "pooled-tiny-entropy": dataclasses.replace(_TINY, boundary="entropy"),
    "pooled-10m": _10M,
    "pooled-10m-entropy": dataclasses.replace(_10M, boundary="entropy"),
    "pooled-10m-fixed4": dataclasses.replace(_10M, boundary="fixed:4"),
    "pooled-10m-unpooled": dataclasses.replace(_10M, boundary="fixed:1"),
    "pooled-10m-hash": _10M_HASH,
    "pooled-10m-hash-long": _10M_HASH_LONG,
    "pooled-10m-hash-space": dataclasses.replace(_10M_HASH, boundary="space"),
    "pooled-10m-hash-long-3to6": dataclasses.replace(_10M_HASH_LONG, hash_buckets=5760, hash_ngrams=(3, 4, 5, 6)),
    "pooled-10m-hash-long-3to8": dataclasses.replace(_10M_HASH_LONG, hash_buckets=3840, hash_ngrams=(3, 4, 5, 6, 7, 8)),
    "pooled-50m": _50M,
    "pooled-50m-unpooled": dataclasses.replace(_50M, boundary="fixed:1"),
    "pooled-100m": _100M,
    "pooled-100m-unpooled": dataclasses.replace(_100M, boundary="fixed:1"),
}
