"""T5 encoder-decoders: the T5-Efficient deep-narrow sizes by name, span corruption, text-to-text.

An encoder-decoder reads its prompt with the encoder and writes a fresh target:

    encoder  = prompt... EOS
    decoder  = [start] target... -> target... EOS
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from stlm.errors import UserError
from stlm.families.base import ModelFamily
from stlm.generation.seq2seq import Seq2SeqRows, generate_seq2seq, generate_seq2seq_batch, stream_seq2seq
from stlm.interop.formats import CT2_T5, HF_T5, ONNX_T5, Exporter
from stlm.models.t5 import PRESETS, T5Config, T5Model, config_from_name, count_params
from stlm.models.t5.model import shift_right
from stlm.objectives.next_token import IGNORE_INDEX
from stlm.objectives.preference import sequence_logprobs
from stlm.objectives.seq2seq import seq2seq_logits, seq2seq_loss
from stlm.tokenizers import Tokenizer
from stlm.tokenizers.sentinels import encode_marked

BYTE_VOCAB_LIMIT = 1024  # below this, "auto" means ByT5's byte vocabulary


class T5Family(ModelFamily):
    name = "t5"
    config_cls = T5Config
    model_cls = T5Model
    presets = PRESETS
    encoder_decoder = True
    objectives = ("span-corruption",)
    arch_keys = (
        "d_model",
        "d_head",
        "n_heads",
        "d_ff",
        "n_layers",
        "n_decoder_layers",
        "ff_kind",
        "tie_embeddings",
        "rel_buckets",
        "rel_max_distance",
        "dropout",
    )
    exports: ClassVar[Mapping[str, Exporter]] = {"hf": HF_T5, "ct2": CT2_T5, "onnx": ONNX_T5}
    export_note = "gguf is written for decoders; llama.cpp's own converter reads the hf export of a SentencePiece T5"

    def count_params(self, cfg: Any) -> int:
        return count_params(cfg)

    def parse_name(self, name: str) -> Any | None:
        return config_from_name(name)

    def describe(self, cfg: Any) -> str:
        ff = "gated-gelu" if cfg.ff_kind == "gated-gelu" else "relu"
        tied = "tied" if cfg.tie_embeddings else "untied"
        return (
            f"d={cfg.d_model} L={cfg.n_layers}+{cfg.n_decoder_layers} H={cfg.n_heads}x{cfg.d_head} "
            f"ff={cfg.d_ff} {ff} {tied} V={cfg.vocab_size}"
        )

    def default_tokenizer(self, cfg: Any) -> str:
        if cfg.vocab_size < BYTE_VOCAB_LIMIT:
            return "byt5"
        raise UserError(
            f"a T5 model with vocab_size {cfg.vocab_size} needs a SentencePiece model: "
            "pass --tokenizer spiece:PATH/spiece.model"
        )

    def check_tokenizer(self, tokenizer: Tokenizer, spec: str, cfg: Any) -> Tokenizer:
        # Embedding tables may be padded above the tokenizer (32,128 rows for T5's 32,100 ids).
        if tokenizer.vocab_size > cfg.vocab_size:
            raise UserError(
                f"tokenizer {spec} has {tokenizer.vocab_size} ids but the model's vocab_size is {cfg.vocab_size}"
            )
        return tokenizer

    def _wrong_objective(self, objective: str, model_name: str) -> str:
        return "T5 models are encoder-decoders; train them with --objective span-corruption"

    def prompt_ids(self, tokenizer: Tokenizer, text: str) -> list[int]:
        # "The <extra_id_0> walks in <extra_id_1> park" asks a T5 to fill two spans: the markup is
        # read as sentinel ids, as transformers' T5 tokenizers read it.
        return encode_marked(tokenizer, text, eos=True)

    def pair_tensors(self, tokenizer: Tokenizer, pairs: Sequence[tuple[str, list[int]]]) -> tuple[torch.Tensor, ...]:
        # Sources as prompts are read (sentinel markup included), so fine-tuning sees what generation feeds.
        sources = [self.prompt_ids(tokenizer, ctx) for ctx, _ in pairs]
        inputs = _pad(sources, tokenizer.pad_id)  # (B, S)
        mask = _pad([[1] * len(s) for s in sources], 0).bool()  # (B, S)
        targets = _pad([t for _, t in pairs], tokenizer.pad_id)  # (B, L)
        return inputs, mask, targets

    def pair_loss(self, model: nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        inputs, mask, targets = tensors
        cfg = model.config
        return seq2seq_loss(
            model, inputs, targets, pad_id=cfg.pad_id, decoder_start_id=cfg.decoder_start_id, attention_mask=mask
        )

    def pair_logits(self, model: nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, mask, targets = tensors
        cfg = model.config
        return seq2seq_logits(
            model, inputs, targets, pad_id=cfg.pad_id, decoder_start_id=cfg.decoder_start_id, attention_mask=mask
        )

    def n_target_tokens(self, tokenizer: Tokenizer, tensors: tuple[torch.Tensor, ...]) -> int:
        return int((tensors[2] != tokenizer.pad_id).sum())

    def pair_logprobs(self, model: nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, mask, targets = tensors
        cfg = model.config
        logits = model(inputs, shift_right(targets, cfg.decoder_start_id, cfg.pad_id), attention_mask=mask)  # (B, L, V)
        return sequence_logprobs(logits, targets.masked_fill(targets == cfg.pad_id, IGNORE_INDEX))

    def stream(
        self, model: nn.Module, prompt_ids: list[int], *, eos_id: int, num_beams: int = 1, **sampling: Any
    ) -> Iterator[int]:
        if num_beams != 1:
            # Beam search ranks whole sequences, so the best one arrives at once, not token by token.
            return iter(generate_seq2seq(model, prompt_ids, eos_id=eos_id, num_beams=num_beams, **sampling))
        return stream_seq2seq(model, prompt_ids, eos_id=eos_id, **sampling)

    def generate_greedy(
        self, model: nn.Module, prompts: list[list[int]], *, eos_id: int, max_new_tokens: int
    ) -> list[list[int]]:
        return generate_seq2seq_batch(model, prompts, max_new_tokens=max_new_tokens, eos_id=eos_id)

    def row_batch(self, model: nn.Module) -> Seq2SeqRows:
        return Seq2SeqRows(model)

    def quantize(self, model: nn.Module, mode: str) -> nn.Module:
        # The tied head is a bare matmul with the embedding, no Linear to replace: give it one
        # first, so the model's largest matrix is quantized too.
        if mode != "none" and isinstance(model, T5Model):
            model.untie_head()
        return super().quantize(model, mode)


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out
