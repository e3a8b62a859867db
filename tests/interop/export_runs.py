"""Tiny random runs to export: a decoder and a byte T5, saved as stlm run folders.

Weights are drawn with a larger spread than the models' initialisation so that
greedy decoding writes varied ids rather than one repeated token, which would
hide a wrong position or cache: parity on such output means something.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stlm import checkpoint as ckpt_io
from stlm import registry
from stlm.tokenizers import ByT5Tokenizer, ByteTokenizer

# A decoder small enough to export in a second, with rows that q8_0's 32-value blocks divide.
DECODER = dict(d_model=64, n_layers=2, n_heads=4, max_seq_len=256)
MIXED_TEXT = "Line one\n\tTabbed: café, naïve, Ελληνικά; 中文字符 and emoji 🐍🚀 <s> end "


def save_run(root: Path, name: str, changes: dict, tokenizer, std: float) -> Path:
    """A run folder holding one checkpoint of preset `name` (with `changes`), weights ~ N(0, std)."""
    family, cfg = registry.resolve_model(name, changes)
    torch.manual_seed(0)
    model = family.build(cfg).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim > 1:  # norm gains stay 1
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    record = ckpt_io.RunRecord(family, cfg, tokenizer.to_dict(), {})
    run = root / name
    ckpt_io.save_checkpoint(run, 0, model=model, optimizer=None, config=record, state={}, keep=1)
    return run


def decoder_run(root: Path) -> Path:
    return save_run(root, "decoder-tiny", DECODER, ByteTokenizer(), std=0.15)


def t5_run(root: Path) -> Path:
    return save_run(root, "t5-debug", {}, ByT5Tokenizer(), std=0.3)
