"""T5 encoder-decoders: the T5-Efficient deep-narrow sizes by name, span corruption, text-to-text.

An encoder-decoder reads its prompt with the encoder and writes a fresh target:

    encoder  = prompt... EOS
    decoder  = [start] target... -> target... EOS
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from stlm.errors import UserError
from stlm.families.base import ModelFamily
from stlm.generation.seq2seq import generate_seq2seq, generate_seq2seq_batch, stream_seq2seq
from stlm.models.t5 import PRESETS, T5Config, T5Model, config_from_name, count_params
from stlm.objectives.seq2seq import seq2seq_logits, seq2seq_loss
from stlm.tokenizers import Tokenizer

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
        return tokenizer.encode(text, eos=True)

    def pair_tensors(self, tokenizer: Tokenizer, pairs: Sequence[tuple[str, list[int]]]) -> tuple[torch.Tensor, ...]:
        sources = [tokenizer.encode(ctx, eos=True) for ctx, _ in pairs]
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


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out
