"""PooledByteConfig: derived fields, boundary parsing, checks, dict round trips, registry row."""

from __future__ import annotations

import pytest

from stlm import registry
from stlm.errors import UserError
from stlm.models.byte_decoder import PooledByteConfig, PooledByteLM
from tests.models.byte_decoder.helpers import small_config


def test_derived_fields_and_defaults():
    cfg = PooledByteConfig(d_local=192, local_heads=3, d_global=320, n_global_layers=7, global_heads=5)
    assert (cfg.d_head_local, cfg.d_head_global, cfg.d_ff_local, cfg.d_ff_global) == (64, 64, 512, 896)
    assert (cfg.vocab_size, cfg.boundary, cfg.boundary_kind, cfg.patch_cap) == (264, "space", "space", 12)
    assert cfg.hash_ngrams == (2, 3, 4) and cfg.context_bytes == 3 and cfg.tie_head and not cfg.share_ffn
    assert cfg.core_schedule == tuple(range(7)) and cfg.core_depth == 7
    assert small_config(boundary="fixed:4").patch_cap == 4 and small_config(boundary="fixed:4").boundary_kind == "fixed"
    assert small_config(hash_ngrams=[]).context_bytes == 1  # the boundary rules still look one byte back


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(boundary="spaces"), "'space', 'entropy' or 'fixed:N'"),
        (dict(boundary="fixed:0"), "fixed:N"),
        (dict(boundary="fixed"), "fixed:N"),
        (dict(boundary="entropy:6"), "'space', 'entropy' or 'fixed:N'"),
        (dict(d_local=33), "divisible by local_heads"),
        (dict(d_global=30), "must be even"),
        (dict(hash_ngrams=(1, 2)), "2..8"),
        (dict(hash_ngrams=(2, 2)), "repeated"),
        (dict(hash_ngrams="234"), "list of n-gram sizes"),
        (dict(pooling="max"), "pooling must be one of"),
        (dict(repeat_mode="twice"), "repeat_mode"),
        (dict(repeat_blocks=0), "repeat_blocks must be a positive integer"),
        (dict(n_enc_layers=True), "n_enc_layers must be a positive integer"),
        (dict(share_ffn="yes"), "share_ffn"),
        (dict(bos_id=300), "bos_id"),
        (dict(eos_id=257), "different"),
        (dict(norm_eps=0), "norm_eps"),
        (dict(entropy_patch_len=0.5), "entropy_patch_len must be a number from 1 to max_patch_len"),
        (dict(entropy_patch_len=7), r"max_patch_len \(6\)"),
        (dict(entropy_patch_len="6"), "entropy_patch_len"),
    ],
)
def test_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_config(**overrides)


def test_dict_round_trip_through_the_registry():
    cfg = small_config(hash_ngrams=(2, 3), boundary="fixed:4", share_ffn=True)
    data = registry.config_to_dict("pooled", cfg)
    assert data["family"] == "pooled" and data["hash_ngrams"] == [2, 3] and "d_head_local" not in data
    assert registry.config_from_dict(data) == ("pooled", cfg)
    assert "entropy_patch_len" not in data  # the default: records read as before the field
    assert cfg.patch_len_target == 6.0
    # Unset, the target is 6 bytes or the cap if that is smaller: short caps stay valid configs.
    assert small_config(boundary="entropy", max_patch_len=4).patch_len_target == 4.0
    longer = small_config(boundary="entropy", max_patch_len=16, entropy_patch_len=8)
    data = registry.config_to_dict("pooled", longer)
    assert data["entropy_patch_len"] == 8.0 and registry.config_from_dict(data) == ("pooled", longer)
    with pytest.raises(UserError, match="unknown PooledByteConfig key.*width"):
        registry.config_from_dict({**data, "width": 3})
    with pytest.raises(UserError, match="missing required key.*d_global"):
        registry.config_from_dict({"family": "pooled", "d_local": 32, "local_heads": 2})


def test_registry_builds_the_family():
    family, cfg = registry.get_config("pooled-tiny")
    assert family == "pooled" and isinstance(registry.build_model(family, cfg), PooledByteLM)
    cfg.d_local = 8
    assert registry.get_config("pooled-tiny")[1].d_local == 64  # a copy
