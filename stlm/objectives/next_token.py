"""Next-token prediction: the causal language-modelling objective.

A packed window of T+1 ids gives T (input, target) pairs by shifting one place:

    window   [BOS  h  e  l  l  o  EOS BOS  w ...]
    inputs   [BOS  h  e  l  l  o  EOS BOS ...]     (B, T)
    targets  [ h   e  l  l  o EOS BOS  w  ...]     (B, T)

Targets equal to `ignore_id` (padding) add nothing to the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def shift(window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T+1) window -> inputs (B, T), targets (B, T)."""
    return window[:, :-1], window[:, 1:]


def next_token_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, ignore_id: int | None = None
) -> torch.Tensor:
    """Mean cross-entropy in nats over the targets that count.

    logits (B, T, V) in any dtype (upcast to fp32 for a stable log-softmax),
    targets (B, T); positions whose target equals `ignore_id` are masked out.
    """
    if ignore_id is not None:
        targets = targets.masked_fill(targets == ignore_id, IGNORE_INDEX)
    return F.cross_entropy(
        logits.float().flatten(0, 1),  # (B*T, V)
        targets.flatten(),  # (B*T,)
        ignore_index=IGNORE_INDEX,
    )


def model_loss(model: torch.nn.Module, window: torch.Tensor, *, ignore_id: int | None = None) -> torch.Tensor:
    """Loss of a model on one packed (B, T+1) window."""
    inputs, targets = shift(window)
    return next_token_loss(model(inputs), targets, ignore_id=ignore_id)
