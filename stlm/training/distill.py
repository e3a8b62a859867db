"""The teacher of a distillation run: loaded from the user's path, checked, and recorded by its weights' hash.

A new run takes the teacher from `distill.teacher` (the --teacher flag or the
recipe), never from anywhere else. Its checkpoint's path, step and weights
hash go into the run's record (`sections["distill"]`). A resumed run loads the
teacher from its recorded `distill.teacher` setting, or from a new --teacher
path if the teacher has moved, and refuses to go on unless the weights hash
equals the recorded one: a resumed run continues against the same teacher,
or not at all.

Under torchrun every rank loads its own copy of the teacher onto its device;
the teacher is never wrapped in DDP/FSDP (it has no gradients to reduce).
With --kd-cache all ranks share the cache folder: its files are named by
the rows' contents and written atomically (objectives/kd_cache.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from stlm import checkpoint as ckpt_io
from stlm.config import DistillConfig
from stlm.errors import UserError
from stlm.evaluation.record import checkpoint_record
from stlm.objectives.distill import Distilled, vocabulary
from stlm.objectives.kd_cache import TeacherCache, cache_key
from stlm.objectives.next_token import IGNORE_INDEX


def load_teacher(
    cfg: DistillConfig, tokenizer: Any, device: torch.device, *, recorded: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher on `device` and its record; a UserError when its tokenizer is not the student's
    or (on resume, `recorded` given) its weights are not the recorded teacher's."""
    assert cfg.teacher is not None
    loaded = ckpt_io.load(cfg.teacher, device=device)
    if vocabulary(loaded.tokenizer) != vocabulary(tokenizer):
        raise UserError(
            f"teacher {cfg.teacher} reads {loaded.tokenizer.name} ids ({loaded.tokenizer.vocab_size}) but the student "
            f"reads {tokenizer.name} ids ({tokenizer.vocab_size}): distillation needs the same tokenizer on both"
        )
    record = checkpoint_record(loaded.path)
    if recorded is not None and recorded.get("weights_sha256") != record["weights_sha256"]:
        raise UserError(
            f"teacher {cfg.teacher} is not the teacher this run was trained with ({recorded.get('path')}, weights "
            f"sha256 {str(recorded.get('weights_sha256'))[:12]}...): pass --teacher with that checkpoint to resume"
        )
    return loaded.model.eval().requires_grad_(False), record


def distilled(
    objective: Any,
    teacher: nn.Module,
    cfg: DistillConfig,
    *,
    teacher_record: dict[str, Any],
    tokenizer: Any,
    progress: bool = False,
) -> Distilled:
    """`objective` with distillation from `teacher` mixed into its loss, as `cfg` says; with `cfg.cache`
    the teacher's outputs are kept there (keyed by `teacher_record`'s weights hash and the settings)."""
    if not hasattr(objective, "logits_targets"):
        raise UserError(
            f"distillation works with next-token, span-corruption and fine-tuning objectives, not {objective.name}"
        )
    cache = None
    if cfg.cache is not None:
        key = cache_key(
            teacher_sha256=teacher_record["weights_sha256"],
            temperature=cfg.temperature,
            topk=cfg.cache_topk,
            dtype=cfg.cache_dtype,
            vocabulary=vocabulary(tokenizer),
            objective=f"{type(objective).__name__}:{getattr(objective, 'name', '')}",
        )
        cache = TeacherCache(Path(cfg.cache), key, tokenizer.vocab_size, (tokenizer.pad_id, IGNORE_INDEX))
        cache.announce(progress)
    return Distilled(objective, teacher, cfg.alpha, cfg.temperature, cfg.reverse, cache=cache)


def check_cache_named(recorded: str | None, overrides: dict[str, object], run_dir: Path) -> None:
    """A run started with --kd-cache resumes with it (any folder: it is a cache; its windows and the stored
    form of the teacher's outputs are the run's), one started without it resumes without it."""
    given = overrides.get("distill.cache")
    if recorded is not None and given is None:
        raise UserError(
            f"{run_dir} reads its teacher's outputs from a cache ({recorded}); stlm reads no path a checkpoint "
            f"names: resume with --kd-cache {recorded} (or another folder; missing outputs are recomputed)"
        )
    if recorded is None and given is not None:
        raise UserError(f"{run_dir} was trained without --kd-cache; it resumes without it")
