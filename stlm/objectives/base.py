"""What the training step asks of an objective: its batch format and its loss, nothing else.

    Objective            loss(model, *tensors)      mean loss of one micro-batch (what backward sees)
                         counts(tensors)            (tokens, bytes) the micro-batch trains on, for throughput
    WindowObjective      window_len                 raw ids the seeded loader draws per example
    (pretraining)        batch(windows, key)        (B, window_len) ids -> model-ready tensors on the CPU
                         validate(model, val, ...)  its held-out score, e.g. {"val_bpb": ..., "val_bytes": ...}

Fine-tuning's text-to-text pairs (`stlm.finetune.format.TextToText`) are an
`Objective` too: the step calls nothing else. Randomness inside `batch` (which
spans to corrupt) comes from `key` (run seed, step, micro-batch, rank), never
from global RNG state, so a resumed run sees identical batches.

Validation stays with the objective because what "better on held-out data"
means is the objective's own: bits per byte for next-token, the loss on fixed
corrupted windows for span corruption (which has no bits per byte). The
training loop only decides when to validate and pools the result over ranks
(`Parallel.validate`), which needs each metric's count (`val_bytes`, `val_tokens`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import numpy as np
import torch

from stlm.config import ObjectiveConfig
from stlm.errors import UserError
from stlm.objectives.mtp import MultiTokenObjective, curriculum_steps
from stlm.objectives.next_token import NextTokenObjective
from stlm.objectives.span_corruption import SpanCorruptionObjective


class Objective(Protocol):
    def loss(self, model: torch.nn.Module, *tensors: torch.Tensor) -> torch.Tensor: ...

    def counts(self, tensors: tuple[torch.Tensor, ...]) -> tuple[int, int]: ...


class WindowObjective(Objective, Protocol):
    name: str
    window_len: int

    def batch(self, windows: torch.Tensor, key: tuple[int, ...]) -> tuple[torch.Tensor, ...]: ...

    def validate(
        self,
        model: torch.nn.Module,
        val: np.ndarray,
        *,
        max_tokens: int | None,
        batch_size: int,
        device: torch.device,
        autocast: contextlib.AbstractContextManager,
    ) -> dict[str, float]: ...


def build_objective(cfg: ObjectiveConfig, seq_len: int, tokenizer: Any, *, steps: int = 0) -> WindowObjective:
    """The pretraining objective `cfg.name` on windows of `seq_len` ids (encoder inputs for span corruption);
    `steps`, the run's length, places the mtp:K curriculum."""
    if cfg.name == "next-token" or cfg.name.startswith("mtp:"):
        if not hasattr(tokenizer, "byte_lengths"):
            raise UserError(f"{cfg.name} training needs a byte or BPE tokenizer, got {tokenizer.name!r}")
        if cfg.name == "next-token":
            return NextTokenObjective(seq_len, tokenizer.byte_lengths())
        return MultiTokenObjective(
            seq_len,
            tokenizer.byte_lengths(),
            k=cfg.mtp_k,
            weights=cfg.mtp_loss_weights(),
            curriculum_steps=curriculum_steps(cfg.mtp_curriculum, steps),
            bos_id=tokenizer.bos_id,
            name=cfg.name,
        )
    return SpanCorruptionObjective.create(cfg, seq_len, tokenizer)
