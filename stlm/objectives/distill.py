"""Knowledge distillation: the student also matches a frozen teacher's softened next-id distribution.

    loss = (1 - alpha) * CE(student, targets) + alpha * T^2 * KL                           (nats)
    KL   = mean over scored positions of KL(p_teacher^T || p_student^T)    forward (default)
                                      or KL(p_student^T || p_teacher^T)    reverse (mode-seeking)
    p^T  = softmax(logits / T)

Hinton et al. 2015; BabyLlama (arXiv 2308.02019) used T = 2, alpha = 0.5.
The T^2 factor keeps the soft term's gradient on the scale of the hard one
as T changes. Scored positions are those the hard loss scores (targets not
-100): padding and fine-tuning prompts add nothing to either term.

Teacher and student must read the same ids (`vocabulary`): any stlm byte
model teaches any byte student (a plain decoder a pooled one), T5 models
that share a SentencePiece file teach each other. `Distilled` wraps an
objective that can give its logits and targets (`logits_targets`):
next-token windows, span corruption, fine-tuning pairs. The teacher runs
under `torch.no_grad()` in eval mode (its logits enter the student's graph
as constants; `inference_mode` tensors could not be saved for backward).
With a `TeacherCache` (--kd-cache) the teacher's outputs are stored per row
on the first epoch and read back on later ones (kd_cache.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stlm.objectives.kd_cache import TeacherCache
from stlm.objectives.next_token import IGNORE_INDEX, next_token_loss

# Tokenizer record fields that say where a file lies, not which ids it gives.
_LOCATION_KEYS = ("spec", "model_file", "json")


def vocabulary(tokenizer: Any) -> dict[str, Any]:
    """What decides a tokenizer's ids (name, size, file hashes), without where its files lie."""
    return {k: v for k, v in tokenizer.to_dict().items() if k not in _LOCATION_KEYS}


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    scored: torch.Tensor,
    *,
    temperature: float,
    reverse: bool = False,
) -> torch.Tensor:
    """T^2 * mean KL over scored positions; student, teacher (..., V) logits, scored (...) bool."""
    return kd_loss_logprobs(
        student, teacher_logprobs(teacher, temperature), scored, temperature=temperature, reverse=reverse
    )


def teacher_logprobs(teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's softened log-probabilities, (..., V) logits -> (..., V) fp32."""
    return F.log_softmax(teacher.float() / temperature, dim=-1)


def kd_loss_logprobs(
    student: torch.Tensor, t: torch.Tensor, scored: torch.Tensor, *, temperature: float, reverse: bool = False
) -> torch.Tensor:
    """`kd_loss` from the teacher's log-probs at the temperature, t (..., V) (what the teacher cache holds)."""
    s = F.log_softmax(student.float() / temperature, dim=-1)  # (..., V)
    kl = (s.exp() * (s - t)).sum(-1) if reverse else (t.exp() * (t - s)).sum(-1)  # (...)
    weight = scored.float()
    return (kl * weight).sum() / weight.sum().clamp(min=1.0) * temperature**2


@dataclass
class Distilled:
    """`inner`'s loss mixed with distillation from `teacher`; an `Objective` for the training step.

    Only `loss` differs from `inner`: batches, counts and validation stay the
    inner objective's (the loop keeps using it for those).
    """

    inner: Any  # has logits_targets(model, *tensors) -> (logits (B, T, V), targets (B, T))
    teacher: nn.Module  # frozen, eval mode, on the student's device
    alpha: float
    temperature: float
    reverse: bool = False
    cache: TeacherCache | None = None  # the teacher's outputs on disk (--kd-cache): read back on later epochs

    def loss(self, model: nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        logits, targets = self.inner.logits_targets(model, *tensors)  # (B, T, V), (B, T)
        hard = next_token_loss(logits, targets)
        if self.alpha == 0:
            return hard
        scored = targets != IGNORE_INDEX  # (B, T)
        if self.cache is None:
            t = self.teacher_logprobs(tensors)
        else:
            t = self.cache.teacher_logprobs(tensors, scored, lambda: self.teacher_logprobs(tensors))
        soft = kd_loss_logprobs(logits, t, scored, temperature=self.temperature, reverse=self.reverse)
        return (1 - self.alpha) * hard + self.alpha * soft

    def teacher_logprobs(self, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The live teacher's log-probs at the temperature, (B, T, V) fp32."""
        with torch.no_grad():
            teacher_logits, _ = self.inner.logits_targets(self.teacher, *tensors)  # (B, T, V)
        return teacher_logprobs(teacher_logits, self.temperature)

    def counts(self, tensors: tuple[torch.Tensor, ...]) -> tuple[int, int]:
        return self.inner.counts(tensors)
