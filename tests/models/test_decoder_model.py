"""DecoderLM: exact sizes, tying, cached decoding, causality, precision, config checks."""

from __future__ import annotations

import math

import pytest
import torch

from stlm.models.decoder import PRESETS, DecoderConfig, DecoderLM, count_params

V = 264

# Exact parameter counts, written out so a silent change in shapes or in the
# counting formula fails here and in `stlm models` at the same time.
EXPECTED_PARAMS = {
    "decoder-tiny": 886_912,
    "decoder-10m": 10_248_000,
    "decoder-25m": 25_833_984,
    "decoder-50m": 51_532_288,
    "decoder-100m": 99_318_400,
}

# (D, layers, F) of each preset, spelled out independently of the presets file.
SHAPES = {
    "decoder-tiny": (128, 4, 384),
    "decoder-10m": (320, 8, 896),
    "decoder-25m": (512, 8, 1408),
    "decoder-50m": (512, 16, 1408),
    "decoder-100m": (640, 20, 1728),
}


def by_hand(d: int, n_layers: int, f: int, vocab: int = V, tied: bool = True) -> int:
    embedding = vocab * d * (1 if tied else 2)
    per_layer = 4 * d * d + 3 * d * f + 2 * d  # attention + SwiGLU + two norms
    return embedding + n_layers * per_layer + d  # + final norm


def small(**overrides) -> DecoderConfig:
    settings = dict(d_model=32, n_layers=2, n_heads=4, max_seq_len=64)
    settings.update(overrides)
    return DecoderConfig(**settings)


@pytest.fixture(scope="module")
def model() -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(small()).eval()


def test_presets_are_exactly_the_listed_ones():
    assert set(PRESETS) == set(EXPECTED_PARAMS) | {
        "bpe-tiny",
        "bpe-10m",
    }  # BPE baselines: tests/models/test_baselines.py


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_exact_param_counts(name):
    cfg = PRESETS[name]
    d, n_layers, f = SHAPES[name]
    assert (cfg.d_model, cfg.n_layers, cfg.d_ff, cfg.vocab_size) == (d, n_layers, f, V)
    assert by_hand(d, n_layers, f) == EXPECTED_PARAMS[name]
    assert count_params(cfg) == EXPECTED_PARAMS[name]
    # Built on the meta device: exact shapes, no memory, no init time.
    with torch.device("meta"):
        net = DecoderLM(cfg)
    unique = {id(p): p.numel() for _, p in net.named_parameters(remove_duplicate=False)}
    assert net.num_params() == sum(unique.values()) == EXPECTED_PARAMS[name]


def test_tiny_is_under_a_million_and_25m_matches_the_peer_size():
    assert count_params(PRESETS["decoder-tiny"]) < 1_000_000
    assert abs(count_params(PRESETS["decoder-25m"]) - 25.9e6) < 0.2e6


def test_tied_head_shares_storage_and_untied_adds_v_times_d():
    tied = DecoderLM(small())
    assert tied.head.weight is tied.embed.weight
    assert tied.head.weight.data_ptr() == tied.embed.weight.data_ptr()
    untied = DecoderLM(small(tie_embeddings=False))
    assert untied.head.weight.data_ptr() != untied.embed.weight.data_ptr()
    assert untied.num_params() - tied.num_params() == V * 32
    assert count_params(untied.config) == untied.num_params()
    assert count_params(tied.config) == tied.num_params()


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    net = DecoderLM(small(d_model=128, n_layers=8, n_heads=4))
    std = net.config.init_std
    assert net.embed.weight.std().item() == pytest.approx(std, rel=0.05)
    assert net.blocks[0].attn.qkv.weight.std().item() == pytest.approx(std, rel=0.05)
    scaled = std / math.sqrt(2 * 8)
    assert net.blocks[3].attn.out.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert net.blocks[3].mlp.down.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert torch.all(net.norm.weight == 1)


def test_meta_build_then_materialise_and_init_weights():
    with torch.device("meta"):
        net = DecoderLM(small())
    net.to_empty(device="cpu")
    net.init_weights()
    assert net.head.weight is net.embed.weight  # to_empty unties; init_weights re-ties
    assert net.num_params() == count_params(small())
    ref = DecoderLM(small())
    torch.testing.assert_close(net.rotary.cos, ref.rotary.cos)
    assert torch.isfinite(net(torch.randint(0, V, (1, 8)))).all()


def test_state_dict_has_no_rotary_tables(model):
    assert not any("rotary" in key for key in model.state_dict())


def test_forward_shape_and_dtype(model):
    logits = model(torch.randint(0, V, (3, 10)))
    assert logits.shape == (3, 10, V) and logits.dtype == torch.float32


def test_cached_prefill_and_steps_equal_full_forward(model):
    ids = torch.randint(0, V, (2, 20))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2, 20)
        parts = [model(ids[:, :8], cache)]
        parts += [model(ids[:, i : i + 1], cache) for i in range(8, 20)]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cached_chunk_after_prefill_equals_full_forward(model):
    ids = torch.randint(0, V, (2, 20))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2)
        parts = [
            model(ids[:, :6], cache),
            model(ids[:, 6:13], cache),
            model(ids[:, 13:14], cache),
            model(ids[:, 14:], cache),
        ]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 7, 15])
def test_causality_changing_token_k_leaves_earlier_logits_unchanged(model, k):
    ids = torch.randint(0, 256, (2, 16))
    changed = ids.clone()
    changed[:, k] = (ids[:, k] + 1) % 256
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :k], b[:, :k], atol=0, rtol=0)
    assert not torch.allclose(a[:, k:], b[:, k:])


def test_runs_under_bf16_autocast_with_and_without_cache(model):
    ids = torch.randint(0, V, (2, 12))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(ids)
        cache = model.new_cache(2)
        assert cache.k[0].dtype == torch.bfloat16
        parts = [model(ids[:, :5], cache)] + [model(ids[:, i : i + 1], cache) for i in range(5, 12)]
    assert full.dtype == torch.bfloat16 and torch.isfinite(full).all()
    torch.testing.assert_close(torch.cat(parts, dim=1).float(), full.float(), atol=0.1, rtol=0.05)
    with torch.no_grad():
        fp32 = model(ids)
    torch.testing.assert_close(full.float(), fp32, atol=0.1, rtol=0.05)


def test_backward_reaches_every_parameter():
    net = DecoderLM(small())
    net(torch.randint(0, V, (2, 9))).float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_forward_rejects_too_long_input_and_bad_cache(model):
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))
    cache = model.new_cache(1, 8)
    with pytest.raises(ValueError, match="batch size"):
        model(torch.zeros(2, 3, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="max_len"):
        model.new_cache(1, 65)


def test_config_derived_fields_and_defaults():
    cfg = DecoderConfig(d_model=512, n_layers=8, n_heads=8)
    assert cfg.d_head == 64 and cfg.d_ff == 1408 and cfg.d_ff % 64 == 0
    assert cfg.vocab_size == V and cfg.tie_embeddings
    assert DecoderConfig(d_model=96, n_layers=1, n_heads=2).d_ff == 256
    assert DecoderConfig(d_model=96, n_layers=1, n_heads=2, d_ff=100).d_ff == 100


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(d_model=100, n_heads=3), "divisible by n_heads"),
        (dict(d_model=36, n_heads=4), "must be even"),
        (dict(n_layers=0), "n_layers must be a positive integer"),
        (dict(n_heads=2.0), "n_heads must be a positive integer"),
        (dict(norm_eps=0), "norm_eps must be a positive number"),
        (dict(tie_embeddings="yes"), "tie_embeddings"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        small(**overrides)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = small(tie_embeddings=False, rope_theta=500)
    data = cfg.to_dict()
    assert "d_head" not in data and data["d_ff"] == cfg.d_ff and data["rope_theta"] == 500.0
    assert DecoderConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="unknown DecoderConfig key.*n_layer, width"):
        DecoderConfig.from_dict({**data, "width": 3, "n_layer": 2})
    with pytest.raises(ValueError, match="missing required key.*n_heads"):
        DecoderConfig.from_dict({"d_model": 32, "n_layers": 2})
