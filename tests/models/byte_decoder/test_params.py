"""Exact parameter counts of every preset, the breakdown by part, and what sharing removes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stlm import registry
from stlm.models.byte_decoder import (
    PRESETS,
    PooledByteLM,
    Sharing,
    count_params,
    param_breakdown,
    sharing_options,
    sharing_total,
)
from tests.models.byte_decoder.helpers import small_config

V = 264

# Written out so a silent change in shapes or in the counting formula fails here.
EXPECTED = {
    "pooled-tiny": 837_440,
    "pooled-tiny-entropy": 837_440,
    "pooled-10m": 11_636_608,
    "pooled-10m-entropy": 11_636_608,
    "pooled-10m-fixed4": 11_636_608,
    "pooled-10m-unpooled": 11_636_608,
    "pooled-10m-hash": 11_574_208,
    "pooled-10m-hash-long": 11_574_208,
    "pooled-10m-hash-space": 11_574_208,
    "pooled-10m-hash-long-3to6": 11_574_208,
    "pooled-10m-hash-long-3to8": 11_574_208,
    "pooled-50m": 54_730_240,
    "pooled-50m-unpooled": 54_730_240,
    "pooled-100m": 105_999_744,
    "pooled-100m-unpooled": 105_999_744,
}
HASH_TABLES = {
    "pooled-tiny": 49_152,
    "pooled-10m": 1_179_648,
    "pooled-10m-hash": 4_423_680,
    "pooled-10m-hash-long": 4_423_680,
    "pooled-10m-hash-space": 4_423_680,
    "pooled-10m-hash-long-3to6": 4_423_680,
    "pooled-10m-hash-long-3to8": 4_423_680,
    "pooled-50m": 3_932_160,
    "pooled-100m": 9_437_184,
}

# (Dl, enc, dec, Fl, Dg, core layers, Fg, n-gram sizes, buckets), spelled out independently of the presets file.
SHAPES = {
    "pooled-tiny": (64, 1, 1, 192, 128, 3, 384, 3, 256),
    "pooled-10m": (192, 1, 2, 512, 320, 7, 896, 3, 2048),
    "pooled-10m-hash": (192, 1, 2, 512, 256, 7, 704, 3, 7680),
    "pooled-10m-hash-long": (192, 1, 2, 512, 256, 7, 704, 3, 7680),
    "pooled-10m-hash-space": (192, 1, 2, 512, 256, 7, 704, 3, 7680),
    "pooled-10m-hash-long-3to6": (192, 1, 2, 512, 256, 7, 704, 4, 5760),
    "pooled-10m-hash-long-3to8": (192, 1, 2, 512, 256, 7, 704, 6, 3840),
    "pooled-50m": (320, 2, 3, 896, 576, 11, 1536, 3, 4096),
    "pooled-100m": (384, 2, 4, 1024, 768, 12, 2048, 3, 8192),
}


def by_hand(dl, enc, dec, fl, dg, core, fg, n_sizes, buckets) -> int:
    block = lambda d, f: 4 * d * d + 3 * d * f + 2 * d  # noqa: E731  attention + SwiGLU + two norms
    embeddings = V * dl + n_sizes * buckets * dl  # tied head adds nothing
    local = (enc + dec) * block(dl, fl) + dl  # + final norm
    pooling = dl + 2 * dl * dg + dg * dl + dl  # norm, Linear(mean || last), unpool, no-patch vector
    return embeddings + local + pooling + core * block(dg, fg) + dg  # + core norm


def test_presets_are_exactly_the_listed_ones():
    assert set(PRESETS) == set(EXPECTED)
    assert {name for name in registry.preset_names() if name.startswith("pooled")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_param_counts(name):
    cfg = PRESETS[name]
    size = name if name in SHAPES else name.split("-")[0] + "-" + name.split("-")[1]
    shape = SHAPES[size]
    assert (cfg.d_local, cfg.n_enc_layers, cfg.n_dec_layers, cfg.d_ff_local) == shape[:4]
    assert (cfg.d_global, cfg.n_global_layers, cfg.d_ff_global, len(cfg.hash_ngrams), cfg.hash_buckets) == shape[4:]
    assert by_hand(*shape) == EXPECTED[name] == count_params(cfg)
    with torch.device("meta"):
        net = PooledByteLM(cfg)
    unique = {id(p): p.numel() for _, p in net.named_parameters(remove_duplicate=False)}
    assert net.num_params() == sum(unique.values()) == EXPECTED[name]
    breakdown = param_breakdown(cfg)
    assert breakdown["hash_tables"] == HASH_TABLES[size] and breakdown["head"] == 0
    assert registry.count_params("pooled", cfg) == EXPECTED[name]


def test_sizes_near_their_names_without_hash_tables():
    for size, nominal in (("pooled-10m", 10e6), ("pooled-50m", 50e6), ("pooled-100m", 100e6)):
        b = param_breakdown(PRESETS[size])
        assert abs(b["total"] - b["hash_tables"] - nominal) < 0.06 * nominal
    assert count_params(PRESETS["pooled-tiny"]) < 1_000_000
    # The unpooled baselines differ from their pooled models in the boundary rule only.
    for size in ("10m", "50m", "100m"):
        pooled, unpooled = PRESETS[f"pooled-{size}"], PRESETS[f"pooled-{size}-unpooled"]
        assert dataclasses.replace(unpooled, boundary=pooled.boundary) == pooled and unpooled.patch_cap == 1


def built(cfg) -> int:
    with torch.device("meta"):
        return PooledByteLM(cfg).num_params()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(tie_head=False),
        dict(share_ffn=True),
        dict(repeat_blocks=3, repeat_mode="loop"),
        dict(hash_ngrams=()),
        dict(pooling="mean"),
        dict(pooling="last", share_ffn=True, tie_head=False, n_global_layers=4, d_ff_global=100),
    ],
)
def test_breakdown_parts_sum_to_the_built_count(overrides):
    cfg = small_config(**overrides)
    b = param_breakdown(cfg)
    parts = ("embeddings", "hash_tables", "local_encoder", "pooling", "core", "local_decoder", "head")
    assert sum(b[k] for k in parts) == b["total"] == count_params(cfg) == built(cfg)


def test_sharing_savings_are_what_the_option_removes():
    cfg = small_config(n_global_layers=4)
    saved = param_breakdown(cfg)["sharing"]
    assert built(dataclasses.replace(cfg, tie_head=False)) - built(cfg) == saved["tie_head"] == V * 32
    assert built(cfg) - built(dataclasses.replace(cfg, share_ffn=True)) == saved["share_ffn"]
    assert saved["repeat_blocks"] == 0
    repeated = dataclasses.replace(cfg, n_global_layers=2, repeat_blocks=2)  # depth 4 from 2 unique blocks
    assert built(cfg) - built(repeated) == param_breakdown(repeated)["sharing"]["repeat_blocks"]


def test_pooled_10m_breakdown():
    assert param_breakdown(PRESETS["pooled-10m"]) == {
        "embeddings": 50_688,
        "hash_tables": 1_179_648,
        "local_encoder": 442_752,
        "pooling": 184_704,
        "core": 8_893_120,
        "local_decoder": 885_696,
        "head": 0,
        "total": 11_636_608,
        "sharing": {"tie_head": 50_688, "share_ffn": 5_160_960, "repeat_blocks": 0},
    }


@pytest.mark.parametrize("share_ffn", [False, True])
@pytest.mark.parametrize("mode", ["block", "loop"])
@pytest.mark.parametrize("n, k", [(2, 2), (3, 2), (2, 3)])
def test_repeat_and_share_savings_by_hand(n, k, mode, share_ffn):
    """repeat_blocks and share_ffn, block and loop order: savings written out from the shapes (Dg 48, Fg 128)."""
    dg, fg = 48, 128
    attention_and_norms, ffn = 4 * dg * dg + 2 * dg, 3 * dg * fg
    cfg = small_config(n_global_layers=n, repeat_blocks=k, repeat_mode=mode, share_ffn=share_ffn)
    assert cfg.d_ff_global == fg
    options = sharing_options(cfg)
    unique_block = attention_and_norms + (0 if share_ffn else ffn)
    # Against an unrepeated core of the same depth n*k (share_ffn as set); the loop order changes no parameter.
    assert options["repeat_blocks"] == Sharing(f"x{k} {mode}", True, (n * k - n) * unique_block)
    assert options["share_ffn"] == Sharing("on" if share_ffn else "off", share_ffn, (n - 1) * ffn)
    assert options["tie_head"] == Sharing("on", True, V * 32)
    # Together: against an untied, unshared, unrepeated core of depth n*k: every extra block whole, every FFN but one.
    together = V * 32 + (n * k - n) * attention_and_norms + ((n * k - 1) if share_ffn else (n * k - n)) * ffn
    assert sharing_total(cfg) == together
    flat = dataclasses.replace(cfg, n_global_layers=n * k, repeat_blocks=1, repeat_mode="block")
    assert built(flat) - built(cfg) == options["repeat_blocks"].saves
    assert built(dataclasses.replace(flat, share_ffn=False, tie_head=False)) - built(cfg) == together
    if share_ffn:  # both on: each counted with the other still on, so they add up to less than together
        assert options["repeat_blocks"].saves + options["share_ffn"].saves + V * 32 < together


def test_options_that_are_off_show_what_switching_them_on_would_remove():
    cfg = small_config(n_global_layers=3, tie_head=False)
    dg, fg = 48, 128
    block = 4 * dg * dg + 2 * dg + 3 * dg * fg
    options = sharing_options(cfg)
    assert options["tie_head"] == Sharing("off", False, V * 32)
    assert options["share_ffn"] == Sharing("off", False, 2 * 3 * dg * fg)
    # repeat_blocks = 2: the core twice as deep from the same 3 blocks saves 3 blocks against 6 unique ones.
    assert options["repeat_blocks"] == Sharing("off", False, 3 * block)
    assert (
        built(dataclasses.replace(cfg, n_global_layers=6)) - built(dataclasses.replace(cfg, repeat_blocks=2))
        == 3 * block
    )
    assert sharing_total(cfg) == 0 and param_breakdown(cfg)["sharing"]["repeat_blocks"] == 0


def test_the_listing_tells_the_entropy_presets_apart():
    # `stlm models` shows the mean patch length an entropy rule is fitted to and its cap.
    family = registry.get_family("pooled")
    assert family.describe(PRESETS["pooled-10m-hash"]).endswith("patches entropy ~6 bytes (cap 12)")
    assert family.describe(PRESETS["pooled-10m-hash-long"]).endswith("patches entropy ~8 bytes (cap 16)")
    assert family.describe(PRESETS["pooled-10m"]).endswith("patches space")
