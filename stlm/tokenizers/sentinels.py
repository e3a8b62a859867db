"""T5-style sentinel ids, shared by the tokenizers that carry them."""

from __future__ import annotations


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
