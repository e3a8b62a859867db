"""T5 configs: exact parameter counts, the name grammar, registry wiring, HF config.json mapping."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stlm import registry
from stlm.errors import UserError
from stlm.models.t5 import PRESETS, T5Config, T5Model, config_from_name, count_params

# Exact counts, written out so a silent change in shapes or in the formula fails here and in
# `stlm models` at once. The tied ReLU ones equal transformers' T5ForConditionalGeneration
# built on the meta device (checked below); t5-v1_1-small is the released checkpoint's count.
EXPECTED_PARAMS = {
    "t5-debug": 254_976,
    "t5-efficient-tiny": 15_570_688,
    "t5-efficient-mini": 31_220_480,
    "t5-efficient-small": 60_506_624,
    "t5-efficient-base": 222_903_552,
    "t5-efficient-large": 737_668_096,
    "t5-efficient-xl": 2_851_598_336,
    "t5-efficient-xxl": 11_307_321_344,
    "t5-efficient-tiny-nl32": 66_986_752,
    "t5-efficient-mini-nl24": 125_630_720,
    "t5-efficient-small-el16-dl8": 100_365_824,
    "t5-small": 60_506_624,
    "t5-v1_1-small": 76_961_152,
}

# (d_model, d_ff, heads, d_kv, layers) from the released config files, independent of presets.py.
RELEASED = {
    "tiny": (256, 1024, 4, 64, 4),
    "mini": (384, 1536, 8, 64, 4),
    "small": (512, 2048, 8, 64, 6),
    "base": (768, 3072, 12, 64, 12),
    "large": (1024, 4096, 16, 64, 24),
    "xl": (1024, 16384, 32, 128, 24),
    "xxl": (1024, 65536, 128, 128, 24),
}


def test_presets_are_exactly_the_listed_ones():
    assert list(PRESETS) == list(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_exact_param_counts_without_and_with_building(name):
    cfg = PRESETS[name]
    assert count_params(cfg) == EXPECTED_PARAMS[name]
    with torch.device("meta"):
        assert T5Model(cfg).num_params() == EXPECTED_PARAMS[name]


def test_tiny_nl32_by_hand_and_the_wrong_assumptions():
    cfg = config_from_name("t5-efficient-tiny-nl32")
    d, i, f, v = 256, 256, 1024, 32128
    encoder_layer = 4 * d * i + 2 * d * f + 2 * d
    decoder_layer = 8 * d * i + 2 * d * f + 3 * d
    assert encoder_layer == 786_944 and decoder_layer == 1_049_344
    assert 32 * encoder_layer + 32 * decoder_layer + 2 * 32 * 4 + 2 * d + v * d == count_params(cfg) == 66_986_752
    # What the usual mistakes would give (t5-efficient.md): untied head, gated FFN, d_kv 32.
    assert count_params(dataclasses.replace(cfg, tie_embeddings=False)) == 75_211_520
    assert count_params(dataclasses.replace(cfg, ff_kind="gated-gelu")) == 83_763_968
    assert count_params(dataclasses.replace(cfg, d_head=32)) == 54_403_840


def test_tied_relu_counts_equal_transformers_on_meta():
    transformers = pytest.importorskip("transformers")
    for name, cfg in PRESETS.items():
        if not cfg.tie_embeddings:
            continue  # transformers 5 ties every T5 head (see T5Config.from_hf_config)
        hf_cfg = {k: v for k, v in cfg.to_hf_config().items() if k not in ("architectures", "model_type")}
        with torch.device("meta"):
            hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf_cfg))
        assert sum(p.numel() for p in hf.parameters()) == EXPECTED_PARAMS[name], name


@pytest.mark.parametrize("size", list(RELEASED))
def test_base_sizes_are_the_released_configs(size):
    cfg = config_from_name(f"t5-efficient-{size}")
    d, f, h, kv, layers = RELEASED[size]
    shape = (cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.d_head, cfg.n_layers, cfg.n_decoder_layers)
    assert shape == (d, f, h, kv, layers, layers)
    assert (cfg.vocab_size, cfg.ff_kind, cfg.tie_embeddings, cfg.rel_buckets, cfg.rel_max_distance) == (
        32128,
        "relu",
        True,
        32,
        128,
    )
    assert (cfg.norm_eps, cfg.pad_id, cfg.eos_id, cfg.decoder_start_id) == (1e-6, 0, 1, 0)


def test_knobs():
    assert config_from_name("t5-efficient-tiny-nl32") == dataclasses.replace(
        config_from_name("t5-efficient-tiny"), n_layers=32, n_decoder_layers=32
    )
    cfg = config_from_name("t5-efficient-small-el16-dl8")
    assert (cfg.n_layers, cfg.n_decoder_layers, cfg.d_model) == (16, 8, 512)
    cfg = config_from_name("t5-efficient-base-dm256-kv32-nh4-ff512")
    assert (cfg.d_model, cfg.d_head, cfg.n_heads, cfg.d_ff, cfg.n_layers) == (256, 32, 4, 512, 12)
    # Knobs apply left to right: a later el overrides the encoder half of nl.
    cfg = config_from_name("t5-efficient-mini-nl8-el2")
    assert (cfg.n_layers, cfg.n_decoder_layers) == (2, 8)
    assert config_from_name("google/t5-efficient-tiny-nl32") == config_from_name("t5-efficient-tiny-nl32")


def test_v1_0_v1_1_and_debug_names():
    assert config_from_name("t5-small") == config_from_name("t5-efficient-small")
    assert config_from_name("google-t5/t5-base") == config_from_name("t5-efficient-base")
    v11 = config_from_name("google/t5-v1_1-small")
    assert (v11.ff_kind, v11.tie_embeddings, v11.d_model, v11.d_ff, v11.n_heads, v11.n_layers) == (
        "gated-gelu",
        False,
        512,
        1024,
        6,
        8,
    )
    debug = config_from_name("t5-debug")
    assert debug.vocab_size == 384 == 3 + 256 + 125  # ByT5's layout
    assert (debug.d_model, debug.n_layers, debug.n_decoder_layers) == (64, 2, 2)


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("t5-efficient-huge", "unknown T5-Efficient size 'huge'"),
        ("t5-efficient-tiny-nl", "bad knob 'nl'"),
        ("t5-efficient-tiny-xx4", "bad knob 'xx4'"),
        ("t5-efficient-tiny-nl-4", "bad knob 'nl'"),
        ("t5-efficient-tiny-nl0", "must be at least 1"),
        ("t5-efficient-tiny-nl4-nl8", "appears twice"),
        ("t5-3b", "unknown T5 model name"),
        ("t5-v1_1-tiny", "unknown T5 model name"),
        ("t5-efficient-", "unknown T5-Efficient size ''"),
    ],
)
def test_malformed_names_are_user_errors_with_the_grammar(name, fragment):
    with pytest.raises(UserError) as err:
        config_from_name(name)
    message = str(err.value)
    assert fragment in message and "\n" not in message
    if "appears twice" not in message and "at least 1" not in message:
        assert "t5-efficient-<size>[-<knob><n>]" in message


def test_non_t5_names_are_not_claimed():
    assert config_from_name("decoder-tiny") is None
    assert config_from_name("gpt2") is None


def test_registry_resolves_parsed_names_and_lists_presets():
    family, cfg = registry.get_config("t5-efficient-tiny-nl32")
    assert family == "t5" and cfg == config_from_name("t5-efficient-tiny-nl32")
    family, cfg = registry.get_config("t5-efficient-small-el16-dl2")  # not listed, still resolves
    assert family == "t5" and (cfg.n_layers, cfg.n_decoder_layers) == (16, 2)
    family, cfg = registry.get_config("t5-debug")
    cfg.n_layers = 9
    assert registry.get_config("t5-debug")[1].n_layers == 2  # a fresh copy each time
    listed = {p.name: p.n_params for p in registry.list_presets() if p.family == "t5"}
    assert listed == EXPECTED_PARAMS
    assert registry.get_config("decoder-tiny")[0] == "decoder"  # the other family still resolves
    with pytest.raises(UserError, match="t5-efficient-<size>"):
        registry.get_config("t5-efficient-tiny-zz9")
    with pytest.raises(UserError, match="unknown model preset 'gpt2'"):
        registry.get_config("gpt2")


def test_registry_config_dict_round_trip_and_build():
    family, cfg = registry.get_config("t5-v1_1-small")
    data = registry.config_to_dict(family, cfg)
    assert data["family"] == "t5" and data["ff_kind"] == "gated-gelu" and "d_attn" not in data
    assert registry.config_from_dict(data) == (family, cfg)
    with torch.device("meta"):
        model = registry.build_model(*registry.get_config("t5-efficient-tiny-nl32"))
    assert isinstance(model, T5Model) and model.num_params() == 66_986_752
    with pytest.raises(UserError, match="unknown T5Config key"):
        registry.config_from_dict({**data, "num_layers": 2})


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (dict(d_model=0), "d_model must be an integer >= 1"),
        (dict(n_layers=True), "n_layers must be an integer"),
        (dict(ff_kind="swiglu"), "ff_kind must be one of relu, gated-gelu"),
        (dict(tie_embeddings="yes"), "tie_embeddings"),
        (dict(dropout=1.0), "dropout"),
        (dict(norm_eps=0), "norm_eps"),
        (dict(rel_buckets=32, rel_max_distance=16), "rel_max_distance 16 must exceed"),
        (dict(eos_id=500), "eos_id 500 is outside the vocabulary"),
    ],
)
def test_bad_config_values(overrides, fragment):
    settings = dict(vocab_size=100, d_model=32, n_heads=4, d_head=8, d_ff=64, n_layers=2)
    settings.update(overrides)
    with pytest.raises(ValueError, match=fragment):
        T5Config(**settings)


def test_dict_round_trip_and_derived_fields():
    cfg = T5Config(d_model=32, n_heads=3, d_head=8, d_ff=64, n_layers=2)
    assert cfg.n_decoder_layers == 2 and cfg.d_attn == 24
    assert T5Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="missing required key.*d_model"):
        T5Config.from_dict({"n_heads": 2, "d_ff": 8, "n_layers": 1})


def test_hf_config_round_trip():
    for name in ("t5-efficient-tiny-nl32", "t5-v1_1-small", "t5-efficient-small-el16-dl8", "t5-debug"):
        cfg = config_from_name(name)
        hf = cfg.to_hf_config()
        assert hf["architectures"] == ["T5ForConditionalGeneration"] and hf["d_kv"] == cfg.d_head
        assert T5Config.from_hf_config(hf) == cfg


def test_hf_config_of_released_shape():
    # The fields a released T5-Efficient / v1.1 config.json has (others left at HF defaults).
    released = {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "d_ff": 1024,
        "d_kv": 64,
        "d_model": 256,
        "dropout_rate": 0.1,
        "eos_token_id": 1,
        "feed_forward_proj": "relu",
        "layer_norm_epsilon": 1e-06,
        "num_decoder_layers": 32,
        "num_heads": 4,
        "num_layers": 32,
        "pad_token_id": 0,
        "relative_attention_num_buckets": 32,
        "vocab_size": 32128,
        "decoder_start_token_id": 0,
    }
    cfg = T5Config.from_hf_config(released)
    assert dataclasses.replace(cfg, dropout=0.0) == config_from_name("t5-efficient-tiny-nl32")
    v11 = T5Config.from_hf_config({**released, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False})
    assert v11.ff_kind == "gated-gelu" and not v11.tie_embeddings
    # transformers 5 writes tie_word_embeddings true with scale_decoder_outputs false for
    # v1.1-style models: what matters for the logits is the scaling.
    quirk = {**released, "tie_word_embeddings": True, "scale_decoder_outputs": False}
    assert not T5Config.from_hf_config(quirk).tie_embeddings
    old = T5Config.from_hf_config({**released, "architectures": ["T5WithLMHeadModel"], "eos_token_id": [1, 5]})
    assert old.eos_id == 1


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "'gpt2' model (GPT2LMHeadModel), not T5"),
        ({"model_type": "bart"}, "'bart' model"),
        ({"architectures": ["BertModel"]}, "BertModel is not a T5"),
        ({}, "neither model_type nor architectures"),
        ({"model_type": "t5", "feed_forward_proj": "gated-silu"}, "'gated-silu' is not supported"),
        ({"model_type": "t5", "d_model": -3}, "not a valid T5 config"),
        (["t5"], "must be a JSON object"),
    ],
)
def test_bad_hf_configs(data, fragment):
    with pytest.raises(UserError) as err:
        T5Config.from_hf_config(data)
    assert fragment in str(err.value)
