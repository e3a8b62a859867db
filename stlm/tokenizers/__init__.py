"""Tokenizers. The byte tokenizers need nothing; SentencePiece is imported lazily.

`load_tokenizer(spec)` turns a spec string into a tokenizer:

    "byte"          ByteTokenizer: bytes 0-255, PAD/BOS/EOS above (decoder family)
    "byt5"          ByT5Tokenizer: bytes + 3 under T5's pad 0 / eos 1 / unk 2
    "spiece:PATH"   SentencePieceTokenizer: a T5-layout SentencePiece model file
    "bpe:PATH"      BPETokenizer: a byte-level BPE tokenizer.json (`stlm train-tokenizer` writes one)

`tokenizer_from_record(record)` rebuilds the tokenizer a checkpoint recorded
(its `to_dict()`); a BPE record carries its whole tokenizer.json.
"""

from __future__ import annotations

from stlm.errors import UserError
from stlm.tokenizers.bpe import BPETokenizer, train_bpe
from stlm.tokenizers.byt5 import ByT5Tokenizer
from stlm.tokenizers.byte import ByteTokenizer
from stlm.tokenizers.sentencepiece import SentencePieceTokenizer, train_sentencepiece

Tokenizer = ByteTokenizer | ByT5Tokenizer | SentencePieceTokenizer | BPETokenizer

_SPIECE = "spiece:"
_BPE = "bpe:"


def load_tokenizer(spec: str) -> Tokenizer:
    """The tokenizer a spec string names (see the module docstring)."""
    if spec == "byte":
        return ByteTokenizer()
    if spec == "byt5":
        return ByT5Tokenizer()
    if spec.startswith(_SPIECE):
        path = spec[len(_SPIECE) :]
        if not path:
            raise UserError("tokenizer spec 'spiece:' needs a model file: 'spiece:PATH/TO/spiece.model'")
        return SentencePieceTokenizer(path)
    if spec.startswith(_BPE):
        path = spec[len(_BPE) :]
        if not path:
            raise UserError("tokenizer spec 'bpe:' needs a tokenizer file: 'bpe:PATH/TO/tokenizer.json'")
        return BPETokenizer.from_file(path)
    raise UserError(
        f"unknown tokenizer {spec!r}: use 'byte', 'byt5', 'spiece:PATH' (a SentencePiece model file) "
        "or 'bpe:PATH' (a byte-level BPE tokenizer.json)"
    )


def tokenizer_from_record(record: dict | None) -> Tokenizer:
    """The tokenizer a checkpoint recorded (a `to_dict()`); no record means the byte tokenizer."""
    record = record or {"name": "byte"}
    if record.get("name") == BPETokenizer.name and "json" in record:
        tokenizer = BPETokenizer(record["json"], source="the checkpoint's tokenizer record")
        if record.get("sha256") not in (None, tokenizer.sha256):
            raise UserError("the checkpoint's BPE tokenizer record is corrupt (SHA-256 mismatch)")
        return tokenizer
    return load_tokenizer(record.get("spec") or record.get("name", "byte"))


__all__ = [
    "BPETokenizer",
    "ByT5Tokenizer",
    "ByteTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "load_tokenizer",
    "tokenizer_from_record",
    "train_bpe",
    "train_sentencepiece",
]
