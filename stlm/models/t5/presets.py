"""Named T5 sizes as plain data, and the T5-Efficient name grammar.

Names (an optional Hugging Face owner prefix `google/` or `google-t5/` is ignored):

    t5-efficient-<size>[-<knob><n>]...   size: tiny mini small base large xl xxl
        knobs override one dimension each: nl (layers of both stacks), el / dl
        (encoder / decoder layers), dm (d_model), kv (d_head), nh (heads), ff (d_ff)
    t5-small | t5-base | t5-large        T5 v1.0: ReLU FFN, tied embeddings
    t5-v1_1-<small|base|large|xl|xxl>    T5 v1.1: gated-GELU FFN, untied LM head
    t5-debug                             tiny CPU size for tests and demos (below)

Every T5-Efficient size uses the released checkpoints' config files: ReLU,
tied, vocab 32128, 32 buckets / distance 128, d_kv 64 for tiny/mini/small
(several model cards print 32; the files say 64, and they are what loads).

t5-debug: d_model 64, 4 heads of 16, d_ff 256, 2 encoder + 2 decoder layers,
vocabulary 384 = 3 specials (pad 0, eos 1, unk 2) + 256 bytes + 125 sentinels,
the layout of Hugging Face's ByT5 tokenizer, so a byte-level tokenizer fits it
without resizing.

`stlm models` lists `PRESETS` with exact counts (`config.count_params`):

    t5-debug                          254,976
    t5-efficient-tiny              15,570,688
    t5-efficient-mini              31,220,480
    t5-efficient-small             60,506,624
    t5-efficient-base             222,903,552
    t5-efficient-large            737,668,096
    t5-efficient-xl             2,851,598,336
    t5-efficient-xxl           11,307,321,344
    t5-efficient-tiny-nl32         66,986,752   the deep-narrow size this toolkit targets
    t5-efficient-mini-nl24        125,630,720
    t5-efficient-small-el16-dl8   100,365,824
    t5-small                       60,506,624
    t5-v1_1-small                  76,961,152
"""

from __future__ import annotations

import dataclasses
import re

from stlm.errors import UserError
from stlm.models.t5.config import T5Config

# size -> (d_model, d_ff, n_heads, d_head, layers per stack), from the released config files.
EFFICIENT_SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (256, 1024, 4, 64, 4),
    "mini": (384, 1536, 8, 64, 4),
    "small": (512, 2048, 8, 64, 6),
    "base": (768, 3072, 12, 64, 12),
    "large": (1024, 4096, 16, 64, 24),
    "xl": (1024, 16384, 32, 128, 24),
    "xxl": (1024, 65536, 128, 128, 24),
}

# knob -> the config fields it sets.
KNOBS: dict[str, tuple[str, ...]] = {
    "nl": ("n_layers", "n_decoder_layers"),
    "el": ("n_layers",),
    "dl": ("n_decoder_layers",),
    "dm": ("d_model",),
    "kv": ("d_head",),
    "nh": ("n_heads",),
    "ff": ("d_ff",),
}

# The original T5 (v1.0): same shapes as the Efficient sizes of the same name.
V1_0 = ("small", "base", "large")

# T5 v1.1: size -> (d_model, d_ff, n_heads, d_head, layers per stack).
V1_1_SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "small": (512, 1024, 6, 64, 8),
    "base": (768, 2048, 12, 64, 12),
    "large": (1024, 2816, 16, 64, 24),
    "xl": (2048, 5120, 32, 64, 24),
    "xxl": (4096, 10240, 64, 64, 24),
}

GRAMMAR = (
    "t5-efficient-<size>[-<knob><n>]... with size one of "
    + " ".join(EFFICIENT_SIZES)
    + " and knobs nl (layers), el / dl (encoder / decoder layers), dm (d_model), kv (d_head), nh (heads), "
    "ff (d_ff), e.g. t5-efficient-tiny-nl32; or t5-small / t5-base / t5-large; or t5-v1_1-<"
    + "|".join(V1_1_SIZES)
    + ">; or t5-debug"
)

_OWNER_PREFIXES = ("google/", "google-t5/")
_KNOB = re.compile(r"(nl|el|dl|dm|kv|nh|ff)(\d+)")


def _sized(dims: tuple[int, int, int, int, int], **kinds) -> T5Config:
    d_model, d_ff, n_heads, d_head, layers = dims
    return T5Config(d_model=d_model, d_ff=d_ff, n_heads=n_heads, d_head=d_head, n_layers=layers, **kinds)


def efficient(size: str) -> T5Config:
    """The T5-Efficient base size, without knobs."""
    return _sized(EFFICIENT_SIZES[size])


DEBUG = T5Config(vocab_size=384, d_model=64, d_head=16, n_heads=4, d_ff=256, n_layers=2)


def config_from_name(name: str) -> T5Config | None:
    """The config a T5 name describes; None when `name` is not a T5 name at all.

    A name that starts like one (`t5-...`) but does not follow the grammar
    raises UserError quoting the grammar, rather than a generic "unknown
    preset": the user meant a T5 and should see how to spell it.
    """
    if not isinstance(name, str):
        return None
    bare = name
    for prefix in _OWNER_PREFIXES:
        if bare.startswith(prefix):
            bare = bare[len(prefix) :]
    if not bare.startswith("t5-"):
        return None
    if bare == "t5-debug":
        return dataclasses.replace(DEBUG)
    if bare.startswith("t5-v1_1-") and bare[len("t5-v1_1-") :] in V1_1_SIZES:
        return _sized(V1_1_SIZES[bare[len("t5-v1_1-") :]], ff_kind="gated-gelu", tie_embeddings=False)
    if bare[3:] in V1_0:
        return efficient(bare[3:])
    if bare.startswith("t5-efficient-"):
        return _parse_efficient(name, bare[len("t5-efficient-") :].split("-"))
    raise UserError(f"unknown T5 model name {name!r}; T5 names are {GRAMMAR}")


def _parse_efficient(name: str, parts: list[str]) -> T5Config:
    size, knobs = parts[0], parts[1:]
    if size not in EFFICIENT_SIZES:
        raise UserError(f"unknown T5-Efficient size {size!r} in {name!r}; names are {GRAMMAR}")
    settings = efficient(size).to_dict()
    seen: set[str] = set()
    for part in knobs:
        match = _KNOB.fullmatch(part)
        if match is None:
            raise UserError(f"bad knob {part!r} in {name!r}; names are {GRAMMAR}")
        knob, value = match.group(1), int(match.group(2))
        if knob in seen:
            raise UserError(f"knob {knob!r} appears twice in {name!r}; give each knob once")
        if value < 1:
            raise UserError(f"knob {part!r} in {name!r} must be at least 1")
        seen.add(knob)
        for field_name in KNOBS[knob]:
            settings[field_name] = value
    try:
        return T5Config.from_dict(settings)
    except ValueError as exc:
        raise UserError(f"{name!r} does not give a valid T5 config: {exc}") from None


# What `stlm models` lists; any other valid name above also resolves.
_LISTED = (
    "t5-debug",
    *(f"t5-efficient-{size}" for size in EFFICIENT_SIZES),
    "t5-efficient-tiny-nl32",
    "t5-efficient-mini-nl24",
    "t5-efficient-small-el16-dl8",
    "t5-small",
    "t5-v1_1-small",
)
PRESETS: dict[str, T5Config] = {name: config_from_name(name) for name in _LISTED}  # type: ignore[misc]
