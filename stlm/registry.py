"""Model registry: the table of model families, and preset name -> (family, config).

A family is one row of `FAMILIES`, a `stlm.families.ModelFamily`: its config
class, its model class, its exact parameter count, its named presets and its
behaviour (tokenizer, prompt encoding, generation, training hooks). Adding a
family is one more row. Everything that crosses a process boundary -
checkpoints, resolved run configs - stores a model config as
`config_to_dict(family, cfg)`, a flat dict whose "family" key says which row
reads it back.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from stlm.errors import UserError
from stlm.families import DecoderFamily, ModelFamily, PooledFamily, T5Family

FAMILY_KEY = "family"

FAMILIES: dict[str, ModelFamily] = {row.name: row for row in (DecoderFamily(), PooledFamily(), T5Family())}


def get_family(name: str | ModelFamily) -> ModelFamily:
    """The row of a family name (a row is returned as it is); UserError for an unknown name."""
    return name if isinstance(name, ModelFamily) else _family(name)


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
        parsed = family.parse_name(name)
        if parsed is not None:
            return family_name, parsed
    names = preset_names()
    if ("/" in str(name) or "\\" in str(name)) and not Path(name).exists():  # meant as a path: presets have no "/"
        raise UserError(
            f"no run folder or checkpoint at {name!r} (the path does not exist), and it is not a model preset; "
            "give an existing run folder, a checkpoint, or a preset name (`stlm models` lists them)"
        )
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UserError(f"unknown model preset {name!r}{hint} (valid presets: {', '.join(names)})")


def resolve_model(name: str, arch: Mapping[str, Any] | None = None) -> tuple[ModelFamily, Any]:
    """(family row, config) of a preset or family-grammar name, with architecture settings
    `arch` changed (`model.<key>` of a run config; the row checks them); the caller may change it."""
    family_name, cfg = get_config(name)
    family = FAMILIES[family_name]
    return family, family.with_arch(cfg, arch) if arch else cfg


def count_params(family: str, cfg: Any) -> int:
    """Exact parameter count of the model `build_model(family, cfg)` would build."""
    return _family(family, cfg).count_params(cfg)


def build_model(family: str, cfg: Any) -> nn.Module:
    """A freshly initialised model of `family` with config `cfg`, on the default device."""
    return _family(family, cfg).build(cfg)


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
