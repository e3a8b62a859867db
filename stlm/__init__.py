"""stlm: super tiny language models.

    import stlm

    m = stlm.load("runs/tiny")
    print(m.generate("The ", max_new_bytes=200, temperature=0.8))
    run = stlm.train("recipes/pretrain/decoder-tiny.toml", out="runs/tiny2")

The API (`stlm.api`) is imported on first use of one of its names (PEP 562),
so `import stlm` stays light: no torch until a model is loaded or trained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stlm.errors import UserError
from stlm.version import __version__

if TYPE_CHECKING:
    from stlm.api import Model, Run, fine_tune, load, train

_API = ("Model", "Run", "fine_tune", "load", "train")
__all__ = ["Model", "Run", "UserError", "__version__", "fine_tune", "load", "train"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from stlm import api

        return getattr(api, name)
    raise AttributeError(f"module 'stlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
