"""Tokenizing in several processes writes exactly the files one process writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stlm.data import prepare_data, shards
from stlm.tokenizers import load_tokenizer


def _corpus(root: Path) -> Path:
    folder = root / "corpus"
    folder.mkdir()
    for i in range(60):
        (folder / f"{i:03d}.txt").write_text(f"Doc {i}: naïve café ✓ " + "word " * (i * 7) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("tokenizer_spec", ["byte", "byt5"])
def test_parallel_tokenization_equals_serial(tmp_path: Path, monkeypatch, tokenizer_spec: str) -> None:
    monkeypatch.setattr(shards, "_CHUNK_CHARS", 500)  # many small chunks, so the order across workers matters
    spec = str(_corpus(tmp_path))
    tokenizer = load_tokenizer(tokenizer_spec)
    serial = prepare_data(spec, tokenizer, cache_dir=tmp_path / "serial", val_fraction=0.2, progress=False, workers=1)
    parallel = prepare_data(
        spec, tokenizer, cache_dir=tmp_path / "parallel", val_fraction=0.2, progress=False, workers=3
    )
    assert serial.path.name == parallel.path.name  # same cache key: workers do not change the bytes
    for split in ("train", "val"):
        assert (serial.path / f"{split}.bin").read_bytes() == (parallel.path / f"{split}.bin").read_bytes()
        assert serial.meta[split] == parallel.meta[split]
    assert serial.meta["train"]["documents"] + serial.meta["val"]["documents"] == 60
    assert len(list(shards._chunks(["x" * 300] * 10))) == 5  # chunks of >= 500 characters
    np.testing.assert_array_equal(serial.train, parallel.train)
