"""Next-token prediction: the causal language-modelling objective.

A packed window of T+1 ids gives T (input, target) pairs by shifting one place:

    window   [BOS  h  e  l  l  o  EOS BOS  w ...]
    inputs   [BOS  h  e  l  l  o  EOS BOS ...]     (B, T)
    targets  [ h   e  l  l  o EOS BOS  w  ...]     (B, T)

Targets equal to `ignore_id` (padding) add nothing to the loss.
`NextTokenObjective` is this loss as a pretraining objective (objectives/base.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stlm.evaluation.bpb import bits_per_byte

IGNORE_INDEX = -100


def shift(window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T+1) window -> inputs (B, T), targets (B, T)."""
    return window[:, :-1], window[:, 1:]


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, *, ignore_id: int | None = None) -> torch.Tensor:
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


@dataclass
class NextTokenObjective:
    """Causal language modelling on packed windows of bytes or tokens: window (B, T+1), validation in BPB.

    `byte_lengths` (V,) gives the UTF-8 bytes of each id (the tokenizer's
    `byte_lengths()`), for the bytes/s the loop logs and for validation BPB.
    """

    seq_len: int
    byte_lengths: np.ndarray
    name: str = "next-token"

    def __post_init__(self) -> None:
        self._lengths = torch.as_tensor(np.asarray(self.byte_lengths, dtype=np.int64))  # (V,)

    @property
    def window_len(self) -> int:
        return self.seq_len + 1

    def batch(self, windows: torch.Tensor, key: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        return (windows,)

    def loss(self, model: torch.nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        return model_loss(model, tensors[0])

    def logits_targets(self, model: torch.nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) and targets (B, T) of one window (what distillation compares)."""
        inputs, targets = shift(tensors[0])
        return model(inputs), targets

    def counts(self, tensors: tuple[torch.Tensor, ...]) -> tuple[int, int]:
        targets = tensors[0][:, 1:]  # (B, T)
        return targets.numel(), int(self._lengths[targets].sum())

    def validate(self, model, val, *, max_tokens, batch_size, device, autocast) -> dict[str, float]:
        stream = val if max_tokens is None else val[: max_tokens + 1]
        result = bits_per_byte(
            model,
            stream,
            context=self.seq_len,
            stride=self.seq_len,
            batch_size=batch_size,
            device=device,
            autocast=autocast,
            byte_lengths=self.byte_lengths,
        )
        return {"val_bpb": result.bits_per_byte, "val_bytes": result.n_bytes}
