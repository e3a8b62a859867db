"""Deterministic train/validation split by document.

A document goes to validation iff a hash of (seed, its content) falls below
`val_fraction`. Membership depends on nothing but the document itself, so
adding documents to a corpus never moves existing ones between sides, and
duplicates always land on the same side (no train/val leakage through them).

A corpus of a few big documents (one text file, a handful of books) would
split badly or not at all by whole documents, so such corpora are first cut
into pieces of about 64 KiB at line breaks, and the pieces are split instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from stlm.data.lazy import LazyDocuments
from stlm.errors import UserError

# Below this many documents a corpus is cut into pieces before splitting.
MIN_DOCUMENTS = 20
PIECE_BYTES = 64 * 1024


def split_documents(
    docs: Sequence[str], val_fraction: float = 0.05, seed: int = 0
) -> tuple[Sequence[str], Sequence[str]]:
    """(train, val) documents, each in corpus order; both are non-empty.

    If the hash rule leaves one side empty, the piece whose hash lies closest
    to the threshold crosses over, so the result stays deterministic.
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if len(docs) >= MIN_DOCUMENTS:
        pieces = docs if isinstance(docs, LazyDocuments) else list(docs)
    else:
        pieces = cut_into_pieces(docs)
    if len(pieces) < 2:
        raise UserError(
            f"the corpus cannot be split into train and validation: it has {len(pieces)} "
            f"piece(s) (documents under {MIN_DOCUMENTS} are cut at line breaks every "
            f"~{PIECE_BYTES // 1024} KiB); add more text or more documents"
        )
    scores = [_score(piece, seed) for piece in pieces]
    is_val = [s < val_fraction for s in scores]
    if not any(is_val):
        is_val[min(range(len(pieces)), key=lambda i: (scores[i], i))] = True
    elif all(is_val):
        is_val[max(range(len(pieces)), key=lambda i: (scores[i], -i))] = False
    if isinstance(pieces, LazyDocuments):  # a corpus on disk stays there: split by index
        return (
            pieces.subset([i for i, v in enumerate(is_val) if not v]),
            pieces.subset([i for i, v in enumerate(is_val) if v]),
        )
    train = [p for p, v in zip(pieces, is_val) if not v]
    val = [p for p, v in zip(pieces, is_val) if v]
    return train, val


def cut_into_pieces(docs: Sequence[str], piece_bytes: int = PIECE_BYTES) -> list[str]:
    """Each document cut after the first newline at or beyond every `piece_bytes`.

    Pieces concatenate back to the document exactly, except that whitespace-
    only pieces (blank lines at the end) are dropped. A line longer than
    `piece_bytes` stays whole. Cuts fall after b"\\n", which is never inside
    a multi-byte UTF-8 character, so every piece decodes cleanly.
    """
    pieces: list[str] = []
    for doc in docs:
        data = doc.encode("utf-8")
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start + piece_bytes - 1)
            end = len(data) if newline < 0 else newline + 1
            pieces.append(data[start:end].decode("utf-8"))
            start = end
    return [p for p in pieces if p.strip()]


def _score(doc: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the seed and the content."""
    digest = hashlib.sha256(seed.to_bytes(8, "little", signed=True) + doc.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64
