"""Registry: preset lookup, exact counts without building, config round trips."""

from __future__ import annotations

import pytest
import torch

from stlm import registry
from stlm.errors import UserError
from stlm.models.decoder import DecoderConfig, DecoderLM


def test_every_preset_listed_with_the_built_models_exact_count():
    presets = registry.list_presets()
    names = [p.name for p in presets]
    assert len(names) == len(set(names)), "preset names must be unique across families"
    assert {"decoder-tiny", "decoder-10m", "decoder-25m", "decoder-50m", "decoder-100m"} <= set(names)
    for p in presets:
        assert p.family in registry.FAMILIES
        with torch.device("meta"):
            net = registry.build_model(p.family, p.config)
        assert p.n_params == net.num_params() == registry.count_params(p.family, p.config)


def test_get_config_returns_a_copy():
    family, cfg = registry.get_config("decoder-tiny")
    assert family == "decoder" and isinstance(cfg, DecoderConfig)
    cfg.n_layers = 99
    assert registry.get_config("decoder-tiny")[1].n_layers == 4


def test_unknown_preset_suggests_the_closest_name():
    with pytest.raises(UserError) as err:
        registry.get_config("decoder-tiy")
    message = str(err.value)
    assert "did you mean 'decoder-tiny'" in message and "decoder-25m" in message and "\n" not in message
    with pytest.raises(UserError, match="valid presets"):
        registry.get_config("zzz")


def test_build_model():
    family, cfg = registry.get_config("decoder-tiny")
    net = registry.build_model(family, cfg)
    assert isinstance(net, DecoderLM) and net.config == cfg
    with pytest.raises(UserError, match="unknown model family 't9'"):
        registry.build_model("t9", cfg)
    with pytest.raises(TypeError, match="DecoderConfig"):
        registry.build_model("decoder", {"d_model": 8})


def test_config_dict_round_trip():
    family, cfg = registry.get_config("decoder-10m")
    data = registry.config_to_dict(family, cfg)
    assert data["family"] == "decoder" and data["d_model"] == 320
    assert registry.config_from_dict(data) == (family, cfg)
    assert data["family"] == "decoder"  # the caller's dict is left as it was


@pytest.mark.parametrize(
    "data, message",
    [
        ({"d_model": 32, "n_layers": 1, "n_heads": 2}, "no 'family' key"),
        ({"family": "t9", "d_model": 32}, "unknown model family 't9'"),
        (
            {"family": "decoder", "d_model": 32, "n_layers": 1, "n_heads": 2, "n_experts": 4},
            "unknown DecoderConfig key.*n_experts",
        ),
        ({"family": "decoder", "d_model": 30, "n_layers": 1, "n_heads": 4}, "divisible"),
        ({"family": "decoder", "d_model": 32}, "missing required"),
        (["decoder"], "table of settings"),
    ],
)
def test_bad_config_dicts_are_user_errors(data, message):
    with pytest.raises(UserError, match=message):
        registry.config_from_dict(data)
