"""The pooled byte decoder: UTF-8 bytes pooled into patches for a deep-narrow core."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from stlm.errors import UserError
from stlm.families.base import CausalFamily
from stlm.generation.pooled import generate
from stlm.models.byte_decoder import (
    PRESETS,
    PooledByteConfig,
    PooledByteLM,
    count_params,
    param_breakdown,
    sharing_options,
    sharing_total,
)
from stlm.tokenizers import ByteTokenizer, Tokenizer

ENTROPY_FIT_IDS = 4 << 20  # training ids used to fit an entropy boundary rule


class PooledFamily(CausalFamily):
    name = "pooled"
    config_cls = PooledByteConfig
    model_cls = PooledByteLM
    presets = PRESETS
    chunked_speculation = False  # the open-patch state takes one byte per step and has no rollback
    arch_keys = (
        "d_local",
        "n_enc_layers",
        "n_dec_layers",
        "local_heads",
        "local_window",
        "d_global",
        "n_global_layers",
        "global_heads",
        "share_ffn",
        "repeat_blocks",
        "repeat_mode",
        "boundary",
        "max_patch_len",
        "entropy_patch_len",
        "pooling",
        "hash_buckets",
        "hash_ngrams",
        "tie_head",
        "max_seq_len",
    )
    export_note = (
        "a pooled model cuts bytes into patches as it reads them, for a local encoder, a global core and a local "
        "decoder; GGUF, transformers' Llama and CTranslate2 hold one fixed stack of token layers, and torch's ONNX "
        "exporter cannot write its data-dependent patch counts (aten::cummax): see docs/export.md"
    )

    def count_params(self, cfg: Any) -> int:
        return count_params(cfg)

    def describe(self, cfg: Any) -> str:
        repeat = f" x{cfg.repeat_blocks} {cfg.repeat_mode}" if cfg.repeat_blocks > 1 else ""
        shared = " shared-ffn" if cfg.share_ffn else ""
        core = f"core {cfg.d_global}x{cfg.n_global_layers}{repeat}"
        heads = f", +{cfg.mtp_heads} mtp heads" if cfg.mtp_heads else ""
        patches = cfg.boundary
        if cfg.boundary == "entropy":  # the mean it is fitted to and the cap tell the presets apart
            patches = f"entropy ~{cfg.patch_len_target:g} bytes (cap {cfg.max_patch_len})"
        return f"local {cfg.d_local} {cfg.n_enc_layers}+{cfg.n_dec_layers}, {core}{shared}, patches {patches}{heads}"

    def breakdown(self, cfg: Any) -> dict[str, Any] | None:
        # "options": each sharing option's setting and saving, on or off; "together": what those on remove together.
        return {**param_breakdown(cfg), "options": sharing_options(cfg), "together": sharing_total(cfg)}

    def check_tokenizer(self, tokenizer: Tokenizer, spec: str, cfg: Any) -> Tokenizer:
        if not isinstance(tokenizer, ByteTokenizer):
            raise UserError(
                f"pooled models read bytes; tokenizer {spec} is not the byte tokenizer: use --tokenizer byte (or auto)"
            )
        return super().check_tokenizer(tokenizer, spec, cfg)

    def before_training(self, model: nn.Module, train_ids: np.ndarray) -> str | None:
        if model.config.boundary_kind != "entropy":
            return None
        # The entropy boundary rule is a small byte model estimated from the training text; it is
        # a buffer, so checkpoints carry it and resumes keep it.
        sample = torch.from_numpy(np.asarray(train_ids[:ENTROPY_FIT_IDS]).astype("int64"))
        mean_patch = model.fit_boundaries(sample)  # to the config's entropy_patch_len
        return f"entropy boundaries fitted on {len(sample):,} ids: {mean_patch:.2f} ids per patch"

    # No `row_batch`: the cache is one sequence's open patch and the core steps only where that
    # sequence closes a patch, so a server advances pooled rows one by one (docs/serve.md).
    def stream(self, model: nn.Module, prompt_ids: list[int], *, eos_id: int, **sampling: Any) -> Iterator[int]:
        # Patch state is per sequence, so greedy batches loop over prompts (the base class does).
        return generate(model, prompt_ids, stop_ids=(eos_id,), **self._sampling(sampling))
