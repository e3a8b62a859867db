"""Reading a family's config dataclass back from plain data (checkpoints, recipes)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

C = TypeVar("C")


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """`cls(**data)` after naming any unknown or missing constructor keys in a ValueError."""
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    valid = [f.name for f in fields]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ValueError(f"{cls.__name__} is missing required key(s) {', '.join(missing)}")
    return cls(**data)


def is_dropout(value: Any) -> bool:
    """Whether `value` is a dropout rate: a number in [0, 1) (a bool is not a rate)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value < 1


def check_dropout(owner: str, value: Any) -> float:
    """A dropout rate as a float; a ValueError naming `owner` when it is not one."""
    if not is_dropout(value):
        raise ValueError(f"{owner}.dropout must be a number in [0, 1), got {value!r}")
    return float(value)
