"""Byte tokenizer: UTF-8 bytes are ids 0-255, specials and sentinels sit above.

Layout (vocab_size = 264, a multiple of 8 so embedding rows align):

    0..255    the raw byte values
    256       PAD   (never a training target)
    257       BOS   (starts every document)
    258       EOS   (ends every document; documents are packed BOS ... EOS)
    259..263  reserved for sentinels (span corruption on byte decoders)

Encoding is lossless for every string. Decoding never raises: ids above 255
are dropped and invalid UTF-8 becomes U+FFFD; `decode_bytes` gives the raw
bytes back for a lossless round trip of arbitrary byte sequences.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

N_BYTES = 256
PAD_ID = 256
BOS_ID = 257
EOS_ID = 258
FIRST_SENTINEL_ID = 259
N_SENTINELS = 5
VOCAB_SIZE = FIRST_SENTINEL_ID + N_SENTINELS  # 264


class ByteTokenizer:
    """UTF-8 bytes plus PAD/BOS/EOS and reserved sentinel ids."""

    name = "byte"
    vocab_size = VOCAB_SIZE
    pad_id = PAD_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    n_sentinels = N_SENTINELS

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        # surrogateescape: text read from bytes that are not UTF-8 (a shell argument such as $'\xff', which
        # Python holds as the surrogate U+DCFF) becomes those bytes again, as a byte model reads them.
        return self.encode_bytes(text.encode("utf-8", "surrogateescape"), bos=bos, eos=eos)

    def encode_bytes(self, data: bytes, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = list(data)
        if bos:
            ids.insert(0, BOS_ID)
        if eos:
            ids.append(EOS_ID)
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The byte ids as raw bytes; specials and sentinels are dropped."""
        return bytes(i for i in ids if 0 <= i < N_BYTES)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the byte ids; never raises on invalid UTF-8 (U+FFFD instead)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def sentinel_id(self, k: int) -> int:
        """The k-th sentinel, counted down from the top of the vocabulary (T5 style)."""
        if not 0 <= k < N_SENTINELS:
            raise ValueError(f"sentinel index {k} out of range 0..{N_SENTINELS - 1}")
        return VOCAB_SIZE - 1 - k

    @staticmethod
    def count_bytes(ids: Sequence[int]) -> int:
        """How many ids are bytes (the denominator of bits per byte)."""
        return sum(1 for i in ids if 0 <= i < N_BYTES)

    def byte_lengths(self) -> np.ndarray:
        """(vocab_size,) int64: UTF-8 bytes each id stands for (1 for a byte, 0 for specials)."""
        return (np.arange(VOCAB_SIZE) < N_BYTES).astype(np.int64)

    def to_dict(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size}
