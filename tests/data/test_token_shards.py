from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from stlm.data import load_documents, prepare_data, shards, split_documents, unigram_bits_per_byte
from stlm.errors import UserError
from stlm.tokenizers.byte import BOS_ID, EOS_ID, ByteTokenizer


def _corpus(root: Path, n: int = 30) -> Path:
    folder = root / "corpus"
    folder.mkdir()
    for i in range(n):
        (folder / f"{i:03d}.txt").write_text(f"Document {i}: naïve café — ünïcode ✓ {'x' * i}\n", encoding="utf-8")
    return folder


def _packed(docs: list[str]) -> np.ndarray:
    ids: list[int] = []
    for doc in docs:
        ids += [BOS_ID, *doc.encode("utf-8"), EOS_ID]
    return np.array(ids, dtype=np.uint16)


def test_pack_format_and_meta_counts(tmp_path: Path) -> None:
    spec = str(_corpus(tmp_path))
    data = prepare_data(spec, ByteTokenizer(), cache_dir=tmp_path / "cache", val_fraction=0.2, progress=False)
    train_docs, val_docs = split_documents(load_documents(spec), val_fraction=0.2)
    for split, docs, tokens in (("train", train_docs, data.train), ("val", val_docs, data.val)):
        assert tokens.dtype == np.uint16 and not tokens.flags.writeable
        np.testing.assert_array_equal(tokens, _packed(docs))
        assert data.meta[split] == {
            "documents": len(docs),
            "tokens": len(tokens),
            "bytes": sum(len(d.encode("utf-8")) for d in docs),
        }
    assert data.meta["spec"] == spec and data.meta["tokenizer"] == ByteTokenizer().to_dict()
    assert data.meta["corpus_documents"] == 30
    assert data.path.parent == tmp_path / "cache" / "tokens"
    assert sorted(p.name for p in data.path.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert json.loads((data.path / "meta.json").read_text()) == data.meta


def test_second_call_reuses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = str(_corpus(tmp_path))
    first = prepare_data(spec, ByteTokenizer(), cache_dir=tmp_path, progress=False)
    stats = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.path.iterdir()}

    def no_rewrite(*args, **kwargs):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(shards, "_write_cache", no_rewrite)
    second = prepare_data(spec, ByteTokenizer(), cache_dir=tmp_path, progress=False)
    assert second.path == first.path
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in second.path.iterdir()} == stats
    np.testing.assert_array_equal(second.train, first.train)


def test_key_changes_with_corpus_and_split_settings(tmp_path: Path) -> None:
    folder = _corpus(tmp_path)
    cache = tmp_path / "cache"
    base = prepare_data(str(folder), ByteTokenizer(), cache_dir=cache, progress=False).path
    other_seed = prepare_data(str(folder), ByteTokenizer(), cache_dir=cache, seed=1, progress=False).path
    other_fraction = prepare_data(str(folder), ByteTokenizer(), cache_dir=cache, val_fraction=0.1, progress=False).path
    (folder / "000.txt").write_text("edited\n", encoding="utf-8")
    edited = prepare_data(str(folder), ByteTokenizer(), cache_dir=cache, progress=False).path
    assert len({base, other_seed, other_fraction, edited}) == 4


def test_crash_mid_write_leaves_no_readable_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = str(_corpus(tmp_path))
    cache = tmp_path / "cache"

    def crash(*args, **kwargs):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(shards.os, "rename", crash)
    with pytest.raises(OSError, match="simulated crash"):
        prepare_data(spec, ByteTokenizer(), cache_dir=cache, progress=False)
    assert list((cache / "tokens").iterdir()) == []  # nothing under a real name, temp removed
    monkeypatch.undo()
    # A temp folder left by a hard kill is hidden and ignored.
    (cache / "tokens" / ".deadbeef.tmp-x").mkdir()
    data = prepare_data(spec, ByteTokenizer(), cache_dir=cache, progress=False)
    assert len(data.train) > 0


def test_damaged_cache_is_a_user_error(tmp_path: Path) -> None:
    spec = str(_corpus(tmp_path))
    data = prepare_data(spec, ByteTokenizer(), cache_dir=tmp_path, progress=False)
    with open(data.path / "train.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(UserError, match="damaged"):
        prepare_data(spec, ByteTokenizer(), cache_dir=tmp_path, progress=False)


class _WordTokenizer:
    """A toy non-byte tokenizer: one id per distinct word, to exercise the generic path."""

    name = "words"
    bos_id, eos_id = 1, 2

    def __init__(self, vocab_size: int = 300) -> None:
        self.vocab_size = vocab_size

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = [3 + sum(map(ord, w)) % (self.vocab_size - 3) for w in text.split()]
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def to_dict(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size}


def test_other_tokenizers_use_their_encode(tmp_path: Path) -> None:
    spec = str(_corpus(tmp_path))
    tok = _WordTokenizer()
    data = prepare_data(spec, tok, cache_dir=tmp_path, progress=False)
    train_docs, _ = split_documents(load_documents(spec))
    expected = [i for d in train_docs for i in tok.encode(d, bos=True, eos=True)]
    np.testing.assert_array_equal(data.train, expected)
    assert data.meta["train"]["bytes"] == sum(len(d.encode()) for d in train_docs)
    with pytest.raises(UserError, match="uint16"):
        prepare_data(spec, _WordTokenizer(vocab_size=70_000), cache_dir=tmp_path, progress=False)


def test_progress_bar_can_be_silenced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare_data(str(_corpus(tmp_path)), ByteTokenizer(), cache_dir=tmp_path, progress=False)
    assert capsys.readouterr().err == ""


def test_unigram_bits_per_byte() -> None:
    two = np.array([ord("a"), ord("b")] * 500 + [BOS_ID, EOS_ID] * 300, dtype=np.uint16)
    assert unigram_bits_per_byte(two) == pytest.approx(1.0)
    assert unigram_bits_per_byte(np.arange(256, dtype=np.uint16).repeat(3)) == pytest.approx(8.0)
    assert unigram_bits_per_byte(np.full(10, 65, dtype=np.uint16)) == 0.0
    skewed = np.array([0] * 3 + [1], dtype=np.uint16)
    assert unigram_bits_per_byte(skewed) == pytest.approx(-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))
    with pytest.raises(ValueError):
        unigram_bits_per_byte(np.array([BOS_ID, EOS_ID], dtype=np.uint16))


def test_unigram_bits_per_byte_of_tokens() -> None:
    """Token order-0 entropy per byte: bits per token x tokens per byte; zero-byte ids ignored."""
    two = np.array([ord("a"), ord("b")] * 500 + [BOS_ID, EOS_ID] * 300, dtype=np.uint16)
    byte_lengths = ByteTokenizer().byte_lengths()
    assert unigram_bits_per_byte(two, byte_lengths=byte_lengths) == pytest.approx(unigram_bits_per_byte(two))
    lengths = np.array([1, 3, 0])  # id 0: one byte, id 1: three bytes, id 2: a control id
    ids = np.array([0, 1, 0, 1, 2, 2, 2], dtype=np.uint16)
    assert unigram_bits_per_byte(ids, byte_lengths=lengths) == pytest.approx(1.0 * 4 / 8)
    with pytest.raises(ValueError):
        unigram_bits_per_byte(np.array([2, 2], dtype=np.uint16), byte_lengths=lengths)


def test_cache_files_are_not_left_private(tmp_path: Path) -> None:
    data = prepare_data(str(_corpus(tmp_path)), ByteTokenizer(), cache_dir=tmp_path, progress=False)
    assert os.stat(data.path).st_mode & 0o055 == 0o055
