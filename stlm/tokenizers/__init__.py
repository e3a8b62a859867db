"""Tokenizers. The byte tokenizers need nothing; SentencePiece is imported lazily.

`load_tokenizer(spec)` turns a spec string into a tokenizer:

    "byte"          ByteTokenizer: bytes 0-255, PAD/BOS/EOS above (decoder family)
    "byt5"          ByT5Tokenizer: bytes + 3 under T5's pad 0 / eos 1 / unk 2
    "spiece:PATH"   SentencePieceTokenizer: a T5-layout SentencePiece model file
"""

from __future__ import annotations

from stlm.errors import UserError
from stlm.tokenizers.byt5 import ByT5Tokenizer
from stlm.tokenizers.byte import ByteTokenizer
from stlm.tokenizers.sentencepiece import SentencePieceTokenizer, train_sentencepiece

Tokenizer = ByteTokenizer | ByT5Tokenizer | SentencePieceTokenizer

_SPIECE = "spiece:"


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
    raise UserError(f"unknown tokenizer {spec!r}: use 'byte', 'byt5' or 'spiece:PATH' (a SentencePiece model file)")


__all__ = [
    "ByT5Tokenizer",
    "ByteTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "load_tokenizer",
    "train_sentencepiece",
]
