"""Multi-token prediction (Gloeckle et al. 2024): K heads on one trunk predict the ids 1..K ahead.

The window is the next-token window (B, T+1), so an mtp:K run reads exactly
the data of the next-token run it is compared with. Head k at input position
t predicts window[t + k]:

    window        [BOS  h   e   l   l   o  EOS BOS  w ]        (B, T+1), T = 8
    head 1 (next) [ h   e   l   l   o  EOS BOS  w ]            window[t + 1], as next-token
    head 2        [ e   l   l   o  EOS  x   x   -  ]           window[t + 2]
    head 3        [ l   l   o  EOS  x   x   x   -  ]           window[t + 3]

    -  past the window's end: not scored
    x  in another document than the input at t (a BOS lies in t+1 .. t+k): not scored;
       the model cannot see the next document, so a head would learn noise there

Head 1 is scored exactly as next-token scores it (the BOS after an EOS
included), so its loss is the plain run's and validation BPB, always the
next-byte head's (`forward`), compares one to one. The loss is the weighted
mean of the heads' mean cross-entropies, sum_k w_k CE_k / sum_k w_k, with
`objective.mtp_weights`. The curriculum trains the next-byte head alone for
the first `mtp_curriculum` share of the steps (its weight vector is
(1, 0, ..)); the step comes from the batch key, so a resumed run sees the
same weights at every step. The heads themselves are part of the network
(`stlm.models.layers.MultiTokenHeads`, `model(ids, heads=True)`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stlm.objectives.next_token import IGNORE_INDEX, NextTokenObjective


def mtp_targets(window: torch.Tensor, k: int, bos_id: int) -> torch.Tensor:
    """window (B, T+1) -> targets (B, T, K): [:, t, j] is window[t + j + 1], or IGNORE_INDEX where
    it is past the window or, for heads j + 1 >= 2, in a later document than the input at t."""
    b, t1 = window.shape
    t = t1 - 1
    doc = (window == bos_id).long().cumsum(dim=1)  # (B, T+1): document number of every position
    targets = torch.full((b, t, k), IGNORE_INDEX, dtype=window.dtype, device=window.device)  # (B, T, K)
    for j in range(k):  # over heads, not time
        n = t - j  # inputs t = 0..n-1 have a target j+1 ahead inside the window
        if n <= 0:
            break
        ahead = window[:, j + 1 : j + 1 + n]  # (B, n)
        if j > 0:
            same_doc = doc[:, j + 1 : j + 1 + n] == doc[:, :n]  # (B, n)
            ahead = ahead.masked_fill(~same_doc, IGNORE_INDEX)
        targets[:, :n, j] = ahead
    return targets


def mtp_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """logits (B, T, K, V), targets (B, T, K), weights (K,) -> sum_k w_k CE_k / sum_k w_k (nats).

    A head with no scored target (a window shorter than k) adds nothing."""
    k = logits.shape[2]
    per_head = F.cross_entropy(
        logits.float().flatten(0, 2),  # (B*T*K, V)
        targets.flatten(),  # (B*T*K,)
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view_as(targets)  # (B, T, K)
    scored = (targets != IGNORE_INDEX).float()  # (B, T, K)
    ce = (per_head * scored).sum(dim=(0, 1)) / scored.sum(dim=(0, 1)).clamp(min=1.0)  # (K,)
    weights = weights.to(ce.device, ce.dtype)[:k]
    return (weights * ce).sum() / weights.sum()


@dataclass
class MultiTokenObjective(NextTokenObjective):
    """mtp:K pretraining on next-token windows (B, T+1); validation is next-token's (the next-byte head).

    `batch` adds the step's head weights (K,) to the window: zeros for heads
    2..K during the curriculum's first `curriculum_steps` steps.
    """

    k: int = 2
    weights: tuple[float, ...] = ()
    curriculum_steps: int = 0
    bos_id: int = 257
    name: str = "mtp"

    def batch(self, windows: torch.Tensor, key: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        step = key[1]  # (seed, step, micro[, rank]), as the loop builds it
        weights = torch.tensor(self.weights or (1.0,) * self.k, dtype=torch.float32)  # (K,)
        if step < self.curriculum_steps:
            weights[1:] = 0.0
        return windows, weights

    def loss(self, model: torch.nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        window, weights = tensors
        logits = model(window[:, :-1], heads=True)  # (B, T, K, V)
        return mtp_loss(logits, mtp_targets(window, self.k, self.bos_id), weights)


def curriculum_steps(fraction: float, total_steps: int) -> int:
    """The steps the next-byte head trains alone: the first `fraction` of the run, rounded down."""
    return int(np.floor(fraction * total_steps))
