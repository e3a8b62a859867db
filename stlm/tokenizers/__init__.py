"""Tokenizers. The byte tokenizer needs nothing; others import their library lazily."""

from stlm.tokenizers.byte import ByteTokenizer

__all__ = ["ByteTokenizer"]
