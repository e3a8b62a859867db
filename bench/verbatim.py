"""How much of a held-out text occurs verbatim in the training text, and what a model's loss is on it.

A model with long hashed n-grams can memorise text that repeats between the
training and validation splits (licence headers, boilerplate shared by several
packages). The split keeps identical documents on one side, not shared passages.
This module marks every held-out byte that lies inside a window of `window`
bytes occurring anywhere in the training text, so a rung's validation BPB can
be read on the repeated bytes and on the rest apart:

    training docs  -> hashes of every window of `window` bytes (documents joined by 0xFF,
                      a byte UTF-8 never holds, so no held-out window matches across a join)
    held-out doc   -> its windows' hashes in that set -> the bytes they cover are "repeated"

Hashes are 64-bit polynomial hashes over the window (numpy, wrapping
arithmetic); a false match has probability ~ n_train / 2**64 per window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

_MULT = np.uint64(0x100000001B3)  # FNV's 64-bit prime: odd, so no power of it is 0 mod 2**64
JOIN = b"\xff"  # never in UTF-8 text


def window_hashes(data: np.ndarray, window: int) -> np.ndarray:
    """(max(0, n - window + 1),) uint64 hash of each window of `window` bytes of a uint8 array."""
    n = data.size - window + 1
    if n <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrapping mod 2**64 is the hash
        for j in range(window):  # over the window, not the text
            h = h * _MULT + data[j : j + n].astype(np.uint64)
    return h


def training_windows(docs: Iterable[str], window: int) -> np.ndarray:
    """Sorted unique hashes of every `window`-byte window of the training documents."""
    joined = JOIN.join(doc.encode("utf-8") for doc in docs)
    return np.unique(window_hashes(np.frombuffer(joined, dtype=np.uint8), window))


def repeated_bytes(text: str, seen: np.ndarray, window: int) -> np.ndarray:
    """(UTF-8 length,) bool: the bytes of `text` inside some window that `seen` (training_windows: sorted,
    unique) holds."""
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    if seen.size == 0:
        return np.zeros(data.size, dtype=bool)
    hashes = window_hashes(data, window)
    at = np.minimum(np.searchsorted(seen, hashes), seen.size - 1)  # seen is sorted: binary search
    starts = np.flatnonzero(seen[at] == hashes)
    cover = np.zeros(data.size + 1, dtype=np.int64)
    np.add.at(cover, starts, 1)
    np.add.at(cover, starts + window, -1)
    return np.cumsum(cover[:-1]) > 0


def bytes_nats(nats: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per-target nats (N,) and the UTF-8 bytes each target stands for (N,) -> per-byte nats (sum lengths,),
    each target's nats spread evenly over its bytes (a byte id: its own; specials: none)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    share = np.divide(nats, lengths, out=np.zeros(len(nats), dtype=np.float64), where=lengths > 0)
    return np.repeat(share, lengths)


def split_bpb(byte_nats: np.ndarray, repeated: np.ndarray) -> dict[str, float]:
    """Bits per byte over all bytes, the repeated ones and the rest, and the repeated share."""
    if byte_nats.shape != repeated.shape:
        raise ValueError(f"{byte_nats.shape[0]} scored bytes but a mask of {repeated.shape[0]}")

    def bpb(mask: np.ndarray) -> float:
        return float(byte_nats[mask].sum() / (math.log(2) * mask.sum())) if mask.any() else float("nan")

    every = np.ones_like(repeated)
    return {"all": bpb(every), "repeated": bpb(repeated), "other": bpb(~repeated), "share": float(repeated.mean())}


def masks(texts: Sequence[str], seen: np.ndarray, window: int) -> np.ndarray:
    """The repeated-byte masks of several documents, concatenated as their streams are."""
    return np.concatenate([repeated_bytes(t, seen, window) for t in texts]) if texts else np.zeros(0, bool)
