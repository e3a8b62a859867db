"""Byte-level BPE tokenizer (Hugging Face `tokenizers`): the token-level baseline's vocabulary.

Layout (vocab_size = n_pieces + 3; `train_bpe(..., vocab_size=4096)` gives 4093 pieces):

    0 .. n_pieces-1   the BPE pieces of the tokenizer.json (the 256 byte symbols among them)
    n_pieces          PAD   (never a training target)
    n_pieces + 1      BOS   (starts every document)
    n_pieces + 2      EOS   (ends every document)

Byte-level: the pre-tokenizer writes every UTF-8 byte as one of 256 printable
stand-in symbols, and all 256 are pieces, so every string encodes without an
unknown id and `decode_bytes` gives its exact bytes back. Each piece therefore
stands for a known byte string, and `byte_lengths()` says how many UTF-8 bytes
each id adds: the denominator of bits per byte for a token model.

PAD/BOS/EOS are ids of this wrapper, not tokens of the Hugging Face tokenizer:
a literal "<bos>" in user text is ordinary text and cannot become a control id.

A checkpoint carries the whole tokenizer.json in its record (`to_dict()`), so
`tokenizer_from_record` rebuilds it without the original file.
`tokenizers` is imported only when a tokenizer is built or trained.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stlm.errors import UserError

N_SPECIALS = 3  # PAD, BOS, EOS above the pieces
# A probe that must survive encode -> decode_bytes unchanged (normalizers would break it).
_PROBE = "Ab  c\t\n\r\x00 ÄÖü ß — 中文 🐍 <bos> <|endoftext|>  \u00a0x"


def byte_symbols() -> dict[str, int]:
    """Stand-in symbol -> byte, as byte-level BPE (GPT-2's scheme) writes bytes.

    Bytes that print as themselves ('!'..'~', '¡'..'¬', '®'..'ÿ') keep their own
    code point; every other byte (controls, space, DEL, NBSP, soft hyphen) is
    moved, in byte order, to the code points 256, 257, ... So a space is 'Ġ'
    (U+0120) and a newline 'Ċ' (U+010A).
    """
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    symbols: dict[str, int] = {}
    moved = 0
    for b in range(256):
        if b in printable:
            symbols[chr(b)] = b
        else:
            symbols[chr(256 + moved)] = b
            moved += 1
    return symbols


class BPETokenizer:
    """Byte-level BPE pieces with PAD/BOS/EOS on top; lossless for every string."""

    name = "bpe"

    def __init__(self, tokenizer_json: str, *, source: str = "tokenizer.json") -> None:
        from tokenizers import Tokenizer

        try:
            data = json.loads(tokenizer_json)
            tok = Tokenizer.from_str(tokenizer_json)
        except Exception as exc:  # JSON errors and the library's own parse errors
            raise UserError(f"{source} is not a Hugging Face tokenizer.json ({exc})") from None
        model = (data.get("model") if isinstance(data, dict) else None) or {}
        if model.get("type") != "BPE":
            raise UserError(f"{source} holds a {model.get('type')} model; stlm's bpe tokenizer needs a byte-level BPE")
        if data.get("added_tokens"):
            raise UserError(
                f"{source} has added tokens (e.g. {data['added_tokens'][0].get('content')!r}); stlm adds PAD/BOS/EOS "
                "itself: train the tokenizer with `stlm train-tokenizer`"
            )
        symbols = byte_symbols()
        vocab: dict[str, int] = tok.get_vocab()
        n = len(vocab)
        if sorted(vocab.values()) != list(range(n)):
            raise UserError(f"{source}: piece ids are not 0..{n - 1}")
        missing = [s for s in symbols if s not in vocab]
        foreign = [p for p in vocab if any(c not in symbols for c in p)]
        if missing or foreign:
            raise UserError(
                f"{source} is not a byte-level BPE ({len(missing)} byte symbols missing, {len(foreign)} pieces "
                "outside the byte alphabet): train one with `stlm train-tokenizer`"
            )
        piece_bytes: list[bytes] = [b""] * n
        for piece, i in vocab.items():
            piece_bytes[i] = bytes(symbols[c] for c in piece)
        self._tok = tok
        self._piece_bytes = piece_bytes
        self.json = tokenizer_json
        self.sha256 = hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest()
        self.n_pieces = n
        self.pad_id, self.bos_id, self.eos_id = n, n + 1, n + 2
        self.vocab_size = n + N_SPECIALS
        if self.decode_bytes(self.encode(_PROBE)) != _PROBE.encode("utf-8"):
            raise UserError(
                f"{source} does not encode text losslessly (a normalizer or a non-byte-level pre-tokenizer?)"
            )

    @classmethod
    def from_file(cls, path: str | Path) -> BPETokenizer:
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(
                f"BPE tokenizer file {path} does not exist: give a tokenizer.json (see `stlm train-tokenizer`)"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{path} is not a Hugging Face tokenizer.json (not UTF-8 text: invalid byte at offset {exc.start})"
            ) from None
        return cls(text, source=str(path))

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer.json (exactly the text this tokenizer was built from)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.json, encoding="utf-8")
        return path

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids: list[int] = self._tok.encode(text, add_special_tokens=False).ids
        if bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes of the pieces; PAD/BOS/EOS and out-of-range ids give none."""
        table, n = self._piece_bytes, self.n_pieces
        return b"".join(table[i] for i in map(int, ids) if 0 <= i < n)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the pieces; never raises on invalid UTF-8 (U+FFFD instead)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def byte_lengths(self) -> np.ndarray:
        """(vocab_size,) int64: UTF-8 bytes each id stands for (0 for PAD/BOS/EOS)."""
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        lengths[: self.n_pieces] = [len(b) for b in self._piece_bytes]
        return lengths

    def count_bytes(self, ids: Sequence[int]) -> int:
        """UTF-8 bytes the ids stand for (the denominator of bits per byte)."""
        return len(self.decode_bytes(ids))

    def to_dict(self) -> dict[str, Any]:
        """The record a checkpoint stores: enough to rebuild the tokenizer (`json` is the whole file)."""
        return {
            "name": self.name,
            "vocab_size": self.vocab_size,
            "n_pieces": self.n_pieces,
            "sha256": self.sha256,
            "json": self.json,
        }


def train_bpe(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> BPETokenizer:
    """Train a byte-level BPE on `texts` (one document each); `vocab_size` counts PAD/BOS/EOS too.

    The result has exactly `vocab_size` ids, or a UserError says the text is
    too small for that many pieces. Training is deterministic for given texts.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    n_pieces = vocab_size - N_SPECIALS
    if n_pieces < 256:
        raise UserError(
            f"a byte-level BPE needs vocab_size >= {256 + N_SPECIALS} (256 bytes + PAD/BOS/EOS), got {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    # GPT-2's pre-tokenizer: split into words/numbers/punctuation runs, then write bytes as symbols.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_pieces,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    got = tok.get_vocab_size()
    if got != n_pieces:
        raise UserError(
            f"the text gives only {got} BPE pieces (min_frequency {min_frequency}), not {n_pieces}: "
            f"use vocab_size <= {got + N_SPECIALS} or more text"
        )
    return BPETokenizer(tok.to_str(), source="trained BPE")
