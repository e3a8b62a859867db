"""Hand-made causal models whose preferences are known, driven through the real harness."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn


class OracleLM(nn.Module):
    """A causal model that knows some texts: it strongly predicts their next id.

    At position t, if the ids so far are a prefix of a known sequence, that
    sequence's next id gets logit +20 (probability ~1); otherwise every id is
    equally likely. Known texts therefore score ~0 nats, anything else pays
    ~20 nats at the first id where it leaves them.
    """

    def __init__(self, sequences: list[list[int]], vocab_size: int, max_seq_len: int = 512):
        super().__init__()
        self.config = SimpleNamespace(max_seq_len=max_seq_len)
        self.vocab_size = vocab_size
        self.next_id: dict[tuple[int, ...], int] = {}
        for seq in sequences:
            for t in range(1, len(seq)):
                self.next_id[tuple(seq[:t])] = seq[t]
        self.dummy = nn.Parameter(torch.zeros(1))  # a device and a parameter count for the harness

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        logits = torch.zeros(*ids.shape, self.vocab_size)
        for b, row in enumerate(ids.tolist()):
            for t in range(len(row)):
                nxt = self.next_id.get(tuple(row[: t + 1]))
                if nxt is not None:
                    logits[b, t, nxt] = 20.0
        return logits + self.dummy


class UnigramLM(nn.Module):
    """Every position predicts the same distribution over ids: log P(id) = logprobs[id]."""

    def __init__(self, logprobs: torch.Tensor, max_seq_len: int = 512):
        super().__init__()
        self.config = SimpleNamespace(max_seq_len=max_seq_len)
        self.register_buffer("logprobs", logprobs)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        return self.logprobs.expand(*ids.shape, -1) + self.dummy
