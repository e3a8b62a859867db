"""Model registry: preset name -> (family, config), and family name -> how to build it.

A family is one row of `FAMILIES`: its config class, its model class, its exact
parameter count and its named presets. Adding a family (pooled byte decoder,
T5) is one more row. Everything that crosses a process boundary - checkpoints,
resolved run configs - stores a model config as `config_to_dict(family, cfg)`,
a flat dict whose "family" key says which row reads it back.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from stlm.errors import UserError
from stlm.models.byte_decoder import PRESETS as POOLED_PRESETS
from stlm.models.byte_decoder import PooledByteConfig, PooledByteLM
from stlm.models.byte_decoder import count_params as count_pooled_params
from stlm.models.decoder import PRESETS as DECODER_PRESETS
from stlm.models.decoder import DecoderConfig, DecoderLM
from stlm.models.decoder import count_params as count_decoder_params
from stlm.models.t5 import PRESETS as T5_PRESETS
from stlm.models.t5 import T5Config, T5Model, config_from_name
from stlm.models.t5 import count_params as count_t5_params

FAMILY_KEY = "family"


@dataclass(frozen=True)
class ModelFamily:
    """What the registry needs to know about one model family."""

    config_cls: type  # a dataclass with to_dict() / from_dict(); from_dict raises ValueError
    model_cls: Callable[[Any], nn.Module]  # model_cls(config) -> an initialised model
    count_params: Callable[[Any], int]  # exact count from the config alone, no model built
    presets: Mapping[str, Any]  # preset name -> config
    # Optional name grammar for families with open-ended names (t5-efficient-tiny-nl32):
    # name -> config, None when the name is not the family's, UserError when it is but is malformed.
    parse_name: Callable[[str], Any | None] | None = None


FAMILIES: dict[str, ModelFamily] = {
    "decoder": ModelFamily(DecoderConfig, DecoderLM, count_decoder_params, DECODER_PRESETS),
    "pooled": ModelFamily(PooledByteConfig, PooledByteLM, count_pooled_params, POOLED_PRESETS),
    "t5": ModelFamily(T5Config, T5Model, count_t5_params, T5_PRESETS, parse_name=config_from_name),
}


@dataclass(frozen=True)
class PresetInfo:
    """One named size, as `stlm models` lists it."""

    name: str
    family: str
    config: Any
    n_params: int  # exact, tied weights counted once


def list_presets() -> list[PresetInfo]:
    """Every preset of every family, in table order, with its exact parameter count."""
    return [
        PresetInfo(name, family_name, dataclasses.replace(cfg), family.count_params(cfg))
        for family_name, family in FAMILIES.items()
        for name, cfg in family.presets.items()
    ]


def preset_names() -> list[str]:
    return [name for family in FAMILIES.values() for name in family.presets]


def get_config(name: str) -> tuple[str, Any]:
    """(family, config) of a preset; the config is a fresh copy the caller may change."""
    for family_name, family in FAMILIES.items():
        if name in family.presets:
            return family_name, dataclasses.replace(family.presets[name])
    for family_name, family in FAMILIES.items():
        parsed = family.parse_name(name) if family.parse_name is not None else None
        if parsed is not None:
            return family_name, parsed
    names = preset_names()
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UserError(f"unknown model preset {name!r}{hint} (valid presets: {', '.join(names)})")


def count_params(family: str, cfg: Any) -> int:
    """Exact parameter count of the model `build_model(family, cfg)` would build."""
    return _family(family, cfg).count_params(cfg)


def build_model(family: str, cfg: Any) -> nn.Module:
    """A freshly initialised model of `family` with config `cfg`, on the default device."""
    return _family(family, cfg).model_cls(cfg)


def config_to_dict(family: str, cfg: Any) -> dict[str, Any]:
    """Plain data for checkpoints and resolved run configs: {"family": ..., **config fields}."""
    return {FAMILY_KEY: family, **_family(family, cfg).config_cls.to_dict(cfg)}


def config_from_dict(data: Mapping[str, Any]) -> tuple[str, Any]:
    """Inverse of `config_to_dict`; a missing or unknown family, or bad keys, raise UserError."""
    if not isinstance(data, Mapping):
        raise UserError(f"a model config must be a table of settings, got {type(data).__name__}")
    if FAMILY_KEY not in data:
        raise UserError(f"model config has no {FAMILY_KEY!r} key (families: {', '.join(FAMILIES)})")
    fields = dict(data)
    family_name = fields.pop(FAMILY_KEY)
    family = _family(family_name)
    try:
        return family_name, family.config_cls.from_dict(fields)
    except (ValueError, TypeError) as exc:
        raise UserError(f"bad {family_name} model config: {exc}") from None


def _family(name: str, cfg: Any = None) -> ModelFamily:
    family = FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        raise UserError(f"unknown model family {name!r} (families: {', '.join(FAMILIES)})")
    if cfg is not None and not isinstance(cfg, family.config_cls):
        # A caller mixing up families is a bug in the code, not the user's input.
        raise TypeError(f"family {name!r} needs a {family.config_cls.__name__}, got {type(cfg).__name__}")
    return family
