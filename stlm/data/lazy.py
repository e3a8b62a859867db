"""Documents that stay on disk until they are read: corpora larger than memory.

A big JSONL file or folder of text files becomes a `LazyDocuments`: a sequence
that holds only where each document is (a byte offset or a path, 8 bytes to a
few dozen per document) and reads a document when it is indexed or iterated.
Building the token cache reads the corpus three times (fingerprint, split,
tokenize) instead of holding it, so memory stays flat whatever the corpus size.
Small corpora are read eagerly into lists as before; `LAZY_BYTES` is the line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

# Sources above this many bytes are read lazily.
LAZY_BYTES = 256 << 20


class LazyDocuments(Sequence[str]):
    """A read-only sequence of documents, each read from disk on access.

    `keys` locate the documents (what `read` takes); `read_all`, if given,
    reads many keys in order more cheaply (one open file for a JSONL).
    """

    def __init__(
        self,
        keys: Sequence[Any],
        read: Callable[[Any], str],
        read_all: Callable[[Sequence[Any]], Iterator[str]] | None = None,
    ) -> None:
        self.keys = keys
        self._read = read
        self._read_all = read_all

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return LazyDocuments(self.keys[index], self._read, self._read_all)
        return self._read(self.keys[index])

    def __iter__(self) -> Iterator[str]:
        if self._read_all is not None:
            return self._read_all(self.keys)
        return (self._read(key) for key in self.keys)

    def subset(self, indices: Sequence[int]) -> LazyDocuments:
        """The documents at `indices`, in that order, still on disk."""
        keys = (
            [self.keys[i] for i in indices]
            if not isinstance(self.keys, np.ndarray)
            else self.keys[np.asarray(indices, dtype=np.int64)]
        )
        return LazyDocuments(keys, self._read, self._read_all)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]
