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

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import nn


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


class CachedRows:
    """What both row batches share: the rows are their newest positions, and rows leave by
    reordering the cache (subclasses set `model`, `device`, `cache` and `last` (B,))."""

    model: nn.Module
    device: torch.device
    cache: Any
    last: torch.Tensor

    def __len__(self) -> int:
        return len(self.last)

    def keep(self, rows: list[int]) -> None:
        if len(rows) == len(self):
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.last = self.last[index]
        if self.cache is not None:
            with inference_step(self.model):
                self.cache.reorder(index)


@contextmanager
def inference_step(model: nn.Module) -> Iterator[None]:
    """Eval mode and inference mode for one step, the model's mode restored after.

    Scoped per step rather than around the whole loop: a generator suspended
    inside a `with` would leave inference mode (a thread-local switch) on in
    the caller's code between tokens. The mode is only toggled when the model
    is training: `eval()` and `train()` walk every module, which for a deep
    model costs more than a step's non-matmul work.
    """
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training:
            model.train()
