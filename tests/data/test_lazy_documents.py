"""Big corpora stay on disk (LazyDocuments) and give exactly the token cache an in-memory read gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stlm.data import load_documents, local, prepare_data, split_documents
from stlm.data.lazy import LazyDocuments
from stlm.errors import UserError
from stlm.tokenizers.byte import ByteTokenizer


def _jsonl(path: Path, n: int = 50) -> Path:
    lines = [json.dumps({"text": f"record {i} ✓ " + "z" * (i % 7) if i % 5 else "", "id": i}) for i in range(n)]
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines[:20]) + "\n\n" + "\n".join(lines[20:]) + "\n").encode("utf-8"))
    return path


def _folder(root: Path, n: int = 30) -> Path:
    root.mkdir()
    for i in range(n):
        (root / f"{i:03d}.txt").write_text("" if i == 4 else f"file {i}\n" * (i + 1), encoding="utf-8")
    return root


@pytest.mark.parametrize("make", [_jsonl, _folder], ids=["jsonl", "folder"])
def test_lazy_source_equals_eager_and_builds_the_same_cache(tmp_path: Path, monkeypatch, make) -> None:
    source = make(tmp_path / ("c.jsonl" if make is _jsonl else "corpus"))
    eager = load_documents(str(source))
    assert isinstance(eager, list)
    monkeypatch.setattr(local, "LAZY_BYTES", 0)
    lazy = load_documents(str(source))
    assert isinstance(lazy, LazyDocuments)
    assert list(lazy) == eager and lazy == eager and lazy[3] == eager[3]
    assert list(load_documents(str(source), max_documents=7)) == eager[:7]
    train, val = split_documents(lazy, val_fraction=0.2)
    assert isinstance(train, LazyDocuments)
    assert (list(train), list(val)) == split_documents(eager, val_fraction=0.2)
    on_disk = prepare_data(
        str(source), ByteTokenizer(), cache_dir=tmp_path / "lazy", val_fraction=0.2, progress=False, workers=2
    )
    monkeypatch.setattr(local, "LAZY_BYTES", 1 << 40)
    in_memory = prepare_data(
        str(source), ByteTokenizer(), cache_dir=tmp_path / "eager", val_fraction=0.2, progress=False
    )
    for split in ("train", "val"):
        assert (on_disk.path / f"{split}.bin").read_bytes() == (in_memory.path / f"{split}.bin").read_bytes()


def test_lazy_jsonl_checks_every_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(local, "LAZY_BYTES", 0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl:2: no 'text' field"):
        load_documents(str(bad))
    bad.write_bytes(b'{"text": "fine"}\n{"text": "\xff"}\n')
    with pytest.raises(UserError, match="not UTF-8 text \\(invalid byte at offset 27\\)"):
        load_documents(str(bad))
