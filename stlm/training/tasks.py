"""What the loop trains and validates: an objective bound to its data format.

The loop draws raw token windows from the seeded `WindowLoader`; a task turns
them into model inputs, computes the loss and validates:

    next-token       window (B, T+1) -> loss on shifted targets; validation in bits per byte
    span-corruption  window (B, raw) -> inputs (B, S), targets (B, L) -> seq2seq loss;
                     validation loss on fixed corrupted validation windows

Randomness inside a task (which spans to corrupt) derives from the run seed and
the step, never from global RNG state, so a resumed run sees identical batches.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from stlm.config import RunConfig
from stlm.errors import UserError
from stlm.evaluation.bpb import bits_per_byte
from stlm.objectives.next_token import model_loss


class Task(Protocol):
    name: str
    window_len: int  # raw tokens drawn per example

    def batch(self, windows: torch.Tensor, key: tuple[int, ...]) -> tuple[torch.Tensor, ...]: ...

    def loss(self, model: torch.nn.Module, *tensors: torch.Tensor) -> torch.Tensor: ...

    def counts(self, tensors: tuple[torch.Tensor, ...]) -> tuple[int, int]: ...

    def validate(self, model: torch.nn.Module, val: np.ndarray, *, max_tokens: int | None, batch_size: int,
                 device: torch.device, autocast: contextlib.AbstractContextManager) -> dict[str, float]: ...


@dataclass
class NextTokenTask:
    """Causal language modelling on packed windows of bytes or tokens.

    `byte_lengths` (vocab,) gives the UTF-8 bytes of each id (the tokenizer's
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

    def counts(self, tensors: tuple[torch.Tensor, ...]) -> tuple[int, int]:
        targets = tensors[0][:, 1:]
        return targets.numel(), int(self._lengths[targets].sum())

    def validate(self, model, val, *, max_tokens, batch_size, device, autocast) -> dict[str, float]:
        stream = val if max_tokens is None else val[: max_tokens + 1]
        result = bits_per_byte(
            model, stream, context=self.seq_len, stride=self.seq_len, batch_size=batch_size, device=device,
            autocast=autocast, byte_lengths=self.byte_lengths,
        )
        return {"val_bpb": result.bits_per_byte, "val_bytes": result.n_bytes}


def build_task(cfg: RunConfig, tokenizer: Any, family: Any) -> Task:
    """The task of `cfg.objective` for a model of `family` (a registry row), checked against it."""
    objective = cfg.objective.name
    family.check_objective(objective, cfg.model)
    if objective == "next-token":
        if not hasattr(tokenizer, "byte_lengths"):
            raise UserError(f"next-token training needs a byte or BPE tokenizer, got {tokenizer.name!r}")
        return NextTokenTask(cfg.data.seq_len, tokenizer.byte_lengths())
    from stlm.training.span_task import SpanCorruptionTask

    return SpanCorruptionTask.create(cfg, tokenizer)
