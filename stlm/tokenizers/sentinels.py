"""T5-style sentinel ids, shared by the tokenizers that carry them, and sentinel markup in prompts."""

from __future__ import annotations

import re
from typing import Protocol

# `<extra_id_N>` as transformers' T5 tokenizers match it: the exact spelling, no leading zeros.
_MARK = re.compile(r"<extra_id_(0|[1-9][0-9]{0,8})>")
# Rust's `char::is_whitespace` (Unicode White_Space), which transformers' lstrip/rstrip use;
# Python's str.strip() would also take the separators \x1c-\x1f.
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


class TopSentinels:
    """`<extra_id_k>` = vocab_size - 1 - k: sentinels count down from the top of the vocabulary.

    Mixed into tokenizers that set `vocab_size` and `n_sentinels`.
    """

    vocab_size: int
    n_sentinels: int

    def sentinel_id(self, k: int) -> int:
        """Id of `<extra_id_k>`, counted down from the top of the vocabulary."""
        if not 0 <= k < self.n_sentinels:
            raise ValueError(f"sentinel index {k} out of range 0..{self.n_sentinels - 1}")
        return self.vocab_size - 1 - k

    def sentinel_index(self, token_id: int) -> int | None:
        """k if `token_id` is `<extra_id_k>`, else None."""
        k = self.vocab_size - 1 - token_id
        return k if 0 <= k < self.n_sentinels else None


class _SentinelTokenizer(Protocol):
    n_sentinels: int

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]: ...

    def sentinel_id(self, k: int) -> int: ...


def encode_marked(tokenizer: _SentinelTokenizer, text: str, *, eos: bool = False) -> list[int]:
    """Ids of `text` with each `<extra_id_k>` (k < n_sentinels) read as sentinel k, as transformers' T5 does.

    "The <extra_id_0> walks in <extra_id_1> park" -> ids("The") s0 ids("walks in") s1 ids("park").
    The whitespace on both sides of a sentinel belongs to it (transformers' lstrip and rstrip);
    the text between sentinels is encoded piece by piece, as if each were a prompt of its own.
    Markup for a sentinel the vocabulary lacks (k >= n_sentinels) stays plain text. Prompts
    are read this way; training text is not (`encode`), so a corpus cannot smuggle control ids.
    """
    n = getattr(tokenizer, "n_sentinels", 0)
    ids: list[int] = []
    start = 0
    for match in _MARK.finditer(text):
        k = int(match.group(1))
        if k >= n:
            continue
        piece = text[start : match.start()].rstrip(_WHITESPACE)
        if piece:
            ids += tokenizer.encode(piece)
        ids.append(tokenizer.sentinel_id(k))
        start = match.end()
        # The whitespace after a sentinel is absorbed too (before the next piece is cut).
        while start < len(text) and text[start] in _WHITESPACE:
            start += 1
    rest = text[start:]
    if rest or not ids:
        ids += tokenizer.encode(rest)
    if eos:
        ids += tokenizer.encode("", eos=True)
    return ids
