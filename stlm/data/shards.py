"""Tokenize a corpus once into memory-mapped token shards, cached on disk.

Packing format (the loss and evaluation code rely on it): every document
becomes `[BOS] + tokens + [EOS]` and the documents of a split are
concatenated into one flat uint16 array. With the byte tokenizer the tokens
are the document's UTF-8 bytes.

Cache layout, under `<cache_dir>/tokens/<key>/`:

    train.bin   uint16 tokens, native byte order, no header (np.memmap)
    val.bin     the same for the validation split
    meta.json   counts per split, corpus spec and fingerprint, tokenizer

Tokenizing runs in `workers` processes when asked (`--workers N`): documents
go out in chunks and come back in order, so the files are byte-for-byte those
of a single process. Memory stays bounded on the token side: packed ids are
written out every few million tokens.

`key` hashes everything the bytes depend on: the corpus fingerprint, the
tokenizer's name and vocabulary size, the split fraction and seed, and the
packing format version. A cache folder is built under a hidden temporary
name, flushed to disk, and renamed into place in one step; a folder under
its real name is therefore always complete, and a crash leaves only a hidden
`.<key>.tmp-<pid>-*` folder that is never read; the next prepare of that key
removes those whose process is gone, and says so.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from stlm.data.download import cache_root
from stlm.data.sources import corpus_fingerprint, load_documents
from stlm.data.split import split_documents
from stlm.errors import UserError
from stlm.tokenizers.byte import ByteTokenizer

FORMAT_VERSION = 1
TOKEN_DTYPE = np.uint16
SPLITS = ("train", "val")
# Tokens gathered in memory before one write: large writes, bounded memory.
_WRITE_TOKENS = 1 << 23
# Documents are sent to tokenizer processes in chunks of about this many characters.
_CHUNK_CHARS = 1 << 20


class _Tokenizer(Protocol):
    """What packing needs from a tokenizer."""

    name: str
    vocab_size: int
    bos_id: int
    eos_id: int

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]: ...

    def to_dict(self) -> dict: ...


@dataclass
class PreparedData:
    """A tokenized, split corpus. `train` and `val` are read-only uint16 memmaps."""

    train: np.ndarray
    val: np.ndarray
    meta: dict[str, Any]
    path: Path

    def describe(self) -> str:
        """Where the shards are and what each split holds, as `stlm prepare` prints it."""
        lines = [f"token shards: {self.path}"]
        for split in ("train", "val"):
            m = self.meta[split]
            lines.append(
                f"  {split:5s} {m['documents']:>8,} documents {m['tokens']:>12,} tokens {m['bytes']:>12,} bytes "
                f"({m['bytes'] / max(m['tokens'], 1):.2f} bytes per token)"
            )
        return "\n".join(lines)


def prepare_data(
    spec: str,
    tokenizer: _Tokenizer,
    *,
    cache_dir: str | Path | None,
    val_fraction: float = 0.05,
    seed: int = 0,
    text_field: str = "text",
    progress: bool = True,
    workers: int = 1,
    streaming: bool = False,
    max_documents: int = 0,
) -> PreparedData:
    """Load, split and tokenize `spec`, or reuse the cached result.

    `workers` > 1 tokenizes in that many processes (0: one per CPU core); the
    result is identical to one process's, so it is not part of the cache key.

    The corpus is always loaded (its fingerprint is part of the cache key, so
    an edited file is noticed); tokenizing and writing happen only once.
    """
    if tokenizer.vocab_size > np.iinfo(TOKEN_DTYPE).max + 1:
        raise UserError(
            f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} tokens; token shards "
            f"are uint16 and hold at most 65536: choose a smaller vocabulary"
        )
    docs = load_documents(
        spec, text_field=text_field, cache_dir=cache_dir, streaming=streaming, max_documents=max_documents
    )
    fingerprint = corpus_fingerprint(docs)
    key = cache_key(fingerprint, tokenizer, val_fraction=val_fraction, seed=seed)
    tokens_dir = cache_root(cache_dir) / "tokens"
    final = tokens_dir / key
    remove_stale_temps(final)
    if not (final / "meta.json").is_file():
        train, val = split_documents(docs, val_fraction=val_fraction, seed=seed)
        meta = {
            "format": FORMAT_VERSION,
            "key": key,
            "spec": spec,
            "text_field": text_field,
            "fingerprint": fingerprint,
            "corpus_documents": len(docs),
            "tokenizer": tokenizer.to_dict(),
            "dtype": np.dtype(TOKEN_DTYPE).name,
            "val_fraction": val_fraction,
            "seed": seed,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_cache(final, {"train": train, "val": val}, tokenizer, meta, progress=progress, workers=workers)
    return load_prepared(final)


def cache_key(fingerprint: str, tokenizer: _Tokenizer, *, val_fraction: float, seed: int) -> str:
    """Names the cache folder: a hash of everything the token files depend on."""
    parts = {
        "format": FORMAT_VERSION,
        "fingerprint": fingerprint,
        # A model file's hash (SentencePiece) tells apart tokenizers of one name and size.
        "tokenizer": [tokenizer.name, tokenizer.vocab_size, tokenizer.to_dict().get("sha256")],
        "val_fraction": float(val_fraction),
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def cached_data(
    fingerprint: str, tokenizer: _Tokenizer, *, cache_dir: str | Path | None, val_fraction: float = 0.05, seed: int = 0
) -> PreparedData | None:
    """The token cache `prepare_data` wrote for a corpus fingerprint (a run records it), if it is still there.

    Unlike `prepare_data` it never reads the corpus, so it costs nothing but
    opening two memmaps; None when the cache was removed or never written here.
    """
    final = cache_root(cache_dir) / "tokens" / cache_key(fingerprint, tokenizer, val_fraction=val_fraction, seed=seed)
    return load_prepared(final) if (final / "meta.json").is_file() else None


def load_prepared(path: str | Path) -> PreparedData:
    """Open a cache folder written by `prepare_data`, checking it is whole."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read token cache {path}/meta.json ({exc}): delete {path} and rerun") from None
    if meta.get("format") != FORMAT_VERSION:
        raise UserError(
            f"token cache {path} has format {meta.get('format')}, this stlm writes "
            f"{FORMAT_VERSION}: delete {path} and rerun"
        )
    arrays = {}
    for split in SPLITS:
        file = path / f"{split}.bin"
        expected = meta[split]["tokens"] * np.dtype(TOKEN_DTYPE).itemsize
        size = file.stat().st_size if file.is_file() else -1
        if size != expected:
            raise UserError(
                f"token cache file {file} is damaged ({size} bytes, expected {expected}): delete {path} and rerun"
            )
        arrays[split] = np.memmap(file, dtype=TOKEN_DTYPE, mode="r")
    return PreparedData(train=arrays["train"], val=arrays["val"], meta=meta, path=path)


def encode_document(text: str, tokenizer: _Tokenizer) -> np.ndarray:
    """`[BOS] + tokens + [EOS]` for one document, as uint16."""
    return _pack(text, tokenizer)[0]


def _pack(text: str, tokenizer: _Tokenizer) -> tuple[np.ndarray, int]:
    """(packed ids, UTF-8 byte count) of one document."""
    data = text.encode("utf-8")
    if isinstance(tokenizer, ByteTokenizer):
        # Bytes are their own ids: one C-level copy instead of a Python list.
        out = np.empty(len(data) + 2, dtype=TOKEN_DTYPE)
        out[0] = tokenizer.bos_id
        out[1:-1] = np.frombuffer(data, dtype=np.uint8)
        out[-1] = tokenizer.eos_id
        return out, len(data)
    ids = np.asarray(tokenizer.encode(text, bos=True, eos=True), dtype=TOKEN_DTYPE)
    return ids, len(data)


def unigram_bits_per_byte(tokens: np.ndarray, *, byte_lengths: np.ndarray | None = None) -> float:
    """Order-0 entropy, in bits per byte, of `tokens`.

    Without `byte_lengths`: the entropy of the byte ids (0..255), the cost per
    byte of a model that knows only byte frequencies: the floor any trained
    byte model should beat. Ids above 255 (BOS, EOS, ...) are ignored.

    With `byte_lengths` ((V,) UTF-8 bytes per id, `tokenizer.byte_lengths()`):
    the entropy per token of the ids that stand for text, times tokens per
    byte: the same floor for a token (BPE) model. Ids of no bytes are ignored.
    """
    lengths = np.ones(256, dtype=np.int64) if byte_lengths is None else np.asarray(byte_lengths, dtype=np.int64)
    counts = np.zeros(len(lengths), dtype=np.int64)
    chunk = 1 << 24  # bincount widens to int64: count a memmap piece by piece
    for start in range(0, len(tokens), chunk):
        piece = np.asarray(tokens[start : start + chunk])
        counts += np.bincount(piece, minlength=len(lengths))[: len(lengths)]
    counts[lengths == 0] = 0
    total = counts.sum()
    if total == 0:
        raise ValueError("no tokens that stand for bytes to measure")
    p = counts[counts > 0] / total
    bits_per_token = float(-(p * np.log2(p)).sum())
    return bits_per_token if byte_lengths is None else bits_per_token * float(total) / float((counts * lengths).sum())


def remove_stale_temps(final: Path) -> list[str]:
    """Delete the temporary folders of `final` left by killed writers (their pid is not alive), saying so.

    A folder whose writer still runs (another rank, another prepare of the same data) is left alone.
    """
    removed = []
    for tmp in sorted(final.parent.glob(f".{final.name}.tmp-*")) if final.parent.is_dir() else []:
        pid = tmp.name[len(f".{final.name}.tmp-") :].partition("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp.name)
    if removed:
        print(
            f"removed {len(removed)} unfinished token cache folder(s) of killed runs: {', '.join(removed)}",
            file=sys.stderr,
        )
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (what a temp folder's name records)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _write_cache(
    final: Path,
    splits: dict[str, Sequence[str]],
    tokenizer: _Tokenizer,
    meta: dict[str, Any],
    *,
    progress: bool,
    workers: int = 1,
) -> None:
    from tqdm import tqdm

    final.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name tells the next prepare whether the writer is still alive.
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-{os.getpid()}-"))
    try:
        n_docs = sum(len(docs) for docs in splits.values())
        with tqdm(total=n_docs, unit="doc", desc="tokenizing", disable=not progress) as bar:
            for split, docs in splits.items():
                with open(tmp / f"{split}.bin", "wb") as out:
                    meta[split] = _write_tokens(out, docs, tokenizer, bar, workers)
                    out.flush()
                    os.fsync(out.fileno())
        with open(tmp / "meta.json", "w", encoding="utf-8") as out:
            json.dump(meta, out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        _fsync_dir(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a cache may be shared
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process (say, another rank) finished the same cache first;
            # its folder is just as good. Anything else is a real error.
            if not (final / "meta.json").is_file():
                raise
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_tokens(
    out: BinaryIO, docs: Sequence[str], tokenizer: _Tokenizer, bar: Any, workers: int = 1
) -> dict[str, int]:
    """Packs `docs` into `out`; returns document, token and UTF-8 byte counts."""
    n_tokens = n_bytes = 0
    buffer: list[np.ndarray] = []
    buffered = 0
    for ids, n_docs, size in _packed_chunks(docs, tokenizer, workers):
        buffer.append(ids)
        buffered += len(ids)
        n_tokens += len(ids)
        n_bytes += size
        if buffered >= _WRITE_TOKENS:
            out.write(np.concatenate(buffer).tobytes())
            buffer, buffered = [], 0
        bar.update(n_docs)
    if buffer:
        out.write(np.concatenate(buffer).tobytes())
    return {"documents": len(docs), "tokens": n_tokens, "bytes": n_bytes}


def _packed_chunks(docs: Sequence[str], tokenizer: _Tokenizer, workers: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """(packed ids, documents, UTF-8 bytes) of consecutive chunks of `docs`, in corpus order."""
    workers = (os.cpu_count() or 1) if workers == 0 else workers
    chunks = _chunks(docs)
    if workers <= 1:
        yield from (_pack_chunk(chunk, tokenizer) for chunk in chunks)
        return
    import multiprocessing

    # fork where there is one: workers inherit the tokenizer and need no fresh interpreter.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        # imap keeps input order: the output is the serial one, byte for byte. It is fed a
        # few chunks per worker at a time, since it would otherwise read the whole corpus ahead.
        while batch := list(itertools.islice(chunks, 4 * workers)):
            yield from pool.imap(_pack_chunk_in_worker, batch)


def _chunks(docs: Sequence[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for doc in docs:
        chunk.append(doc)
        size += len(doc)
        if size >= _CHUNK_CHARS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _pack_chunk(chunk: list[str], tokenizer: _Tokenizer) -> tuple[np.ndarray, int, int]:
    packed = [_pack(doc, tokenizer) for doc in chunk]
    return np.concatenate([ids for ids, _ in packed]), len(chunk), sum(size for _, size in packed)


_worker_tokenizer: _Tokenizer | None = None


def _init_worker(tokenizer: _Tokenizer) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def _pack_chunk_in_worker(chunk: list[str]) -> tuple[np.ndarray, int, int]:
    assert _worker_tokenizer is not None
    return _pack_chunk(chunk, _worker_tokenizer)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on Windows.
    if os.name == "posix":
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
