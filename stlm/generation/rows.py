"""What a batch of rows that join and leave between steps offers: continuous batching.

A server keeps one of these per model. Rows decode together, one forward per
step for all of them, each at its own position with its own cache rows:

    logits = batch.join(prompts, limits)   # prefill new rows (appended last): (n, V) for their first ids
    logits = batch.step(ids)               # feed each row its newest id (B,): (B, V) for the next ones
    batch.keep([0, 2])                     # the other rows leave, their cache rows freed

Choosing ids from the logits (greedy, or sampling with each row's own settings
and generator) is the caller's: the batch only runs the model. A row's logits
are the ones it gets decoding alone, up to the summation order of the kernels.
`stlm.generation.decoder.DecoderRows` and `stlm.generation.seq2seq.Seq2SeqRows`
implement it; a family whose cache cannot hold rows at different positions
(pooled: per-sequence patch state) has none, and its rows decode one by one.
"""

from __future__ import annotations

from typing import Protocol

import torch


class RowBatch(Protocol):
    def __len__(self) -> int:
        """Rows in the batch."""
        ...

    def limit(self, prompt: list[int], max_new_tokens: int) -> int:
        """How many ids a row with this prompt may write: max_new_tokens, or fewer where the
        context ends first (the decoding loop alone stops there too)."""
        ...

    def join(self, prompts: list[list[int]], limits: list[int]) -> torch.Tensor:
        """Prefill `prompts` (each to write at most its limit) as new rows after the others;
        the logits (n, V) that choose each one's first id. Raises ValueError (nothing joins)
        for a prompt the model cannot take."""
        ...

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed every row its newest id, long (B,) in row order; the next logits (B, V)."""
        ...

    def keep(self, rows: list[int]) -> None:
        """Keep these rows, in this order; the others leave."""
        ...
