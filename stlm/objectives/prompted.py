"""Prompted next-token loss: a causal model fine-tuned to write a target after a prompt.

One example is the prompt then the target in one sequence; the loss counts
the target tokens (and the EOS that ends them) only, never the prompt:

    ids      [BOS  p   p   SEP  t   t   EOS]
    inputs   [BOS  p   p   SEP  t   t ]          (B, T)
    labels   [-100 -100 -100 t  t  EOS]          (B, T)   -100: not scored

Rows are right-padded; padding sits after every scored position, so a causal
model never attends to it and its labels are -100.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from stlm.objectives.next_token import IGNORE_INDEX, next_token_loss


def pack_prompted(examples: Sequence[tuple[list[int], list[int]]], *, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt ids, target ids) pairs -> inputs (B, T) and labels (B, T) with the prompt masked.

    A prompt must hold at least one id (BOS); a target at least one (its EOS).
    """
    width = max(len(p) + len(t) for p, t in examples) - 1
    inputs = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, (prompt, target) in enumerate(examples):
        if not prompt or not target:
            raise ValueError(f"example {row}: prompt and target need at least one id each")
        ids = torch.tensor(prompt + target, dtype=torch.long)
        n = ids.numel() - 1
        inputs[row, :n] = ids[:-1]
        labels[row, len(prompt) - 1 : n] = ids[len(prompt) :]  # positions that predict the target
    return inputs, labels


def prompted_loss(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats over the target tokens of a `pack_prompted` batch."""
    return next_token_loss(model(inputs), labels)  # (B, T, V) logits; -100 labels ignored
