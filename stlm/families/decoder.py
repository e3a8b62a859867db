"""The plain decoder-only transformer: the token-level baseline (bytes unpooled, or a small BPE)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from torch import nn

from stlm.families.base import CausalFamily
from stlm.generation.decoder import DecoderRows, generate, generate_batch
from stlm.interop.formats import CT2_DECODER, GGUF, HF_LLAMA, ONNX_DECODER, Exporter
from stlm.models.decoder import PRESETS, DecoderConfig, DecoderLM, count_params


class DecoderFamily(CausalFamily):
    name = "decoder"
    config_cls = DecoderConfig
    model_cls = DecoderLM
    presets = PRESETS
    arch_keys = ("d_model", "n_layers", "n_heads", "d_ff", "max_seq_len", "tie_embeddings", "rope_theta")
    exports: ClassVar[Mapping[str, Exporter]] = {"gguf": GGUF, "hf": HF_LLAMA, "ct2": CT2_DECODER, "onnx": ONNX_DECODER}
    export_note = "every format holds a decoder over the byte vocabulary"

    def count_params(self, cfg: Any) -> int:
        return count_params(cfg)

    def describe(self, cfg: Any) -> str:
        heads = f" +{cfg.mtp_heads} mtp heads" if cfg.mtp_heads else ""
        return (
            f"d={cfg.d_model} L={cfg.n_layers} H={cfg.n_heads} ff={cfg.d_ff} V={cfg.vocab_size} "
            f"ctx={cfg.max_seq_len}{heads}"
        )

    def stream(self, model: nn.Module, prompt_ids: list[int], *, eos_id: int, **sampling: Any) -> Iterator[int]:
        return generate(model, prompt_ids, stop_ids=(eos_id,), **self._sampling(sampling))

    def generate_greedy(
        self, model: nn.Module, prompts: list[list[int]], *, eos_id: int, max_new_tokens: int
    ) -> list[list[int]]:
        # One batch: prompts right-padded, each row at its own rotary position (decoder.generate_batch).
        return generate_batch(model, prompts, max_new_tokens=max_new_tokens, stop_ids=(eos_id,))

    def row_batch(self, model: nn.Module) -> DecoderRows:
        return DecoderRows(model)
