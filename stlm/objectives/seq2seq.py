"""Sequence-to-sequence loss: an encoder-decoder predicts the target given the input.

The decoder reads the targets shifted right behind the start id (teacher
forcing) and predicts each target token:

    targets          [<X0>  c   d  <X1>  h   EOS  PAD]   (B, L)
    decoder inputs   [START <X0> c   d  <X1>  h   EOS]   (B, L)

The loss is the mean cross-entropy over the target tokens that are not PAD,
so padded fine-tuning batches count every real token once. Span-corruption
batches have no padding at all.
"""

from __future__ import annotations

import torch

from stlm.models.t5.model import shift_right
from stlm.objectives.next_token import IGNORE_INDEX, next_token_loss


def seq2seq_loss(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    pad_id: int = 0,
    decoder_start_id: int = 0,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy in nats of `model` over the non-pad tokens of `targets`.

    inputs (B, S) and targets (B, L) are int64; `model(inputs,
    decoder_input_ids, attention_mask=...)` returns logits (B, L, V).
    Targets of -100 (Hugging Face's ignore label) are ignored as well.
    `attention_mask` (B, S), 1 on real input tokens, is passed on unchanged:
    give it for padded inputs (None means every input token is real).
    """
    logits, labels = seq2seq_logits(
        model, inputs, targets, pad_id=pad_id, decoder_start_id=decoder_start_id, attention_mask=attention_mask
    )
    return next_token_loss(logits, labels)


def seq2seq_logits(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    pad_id: int = 0,
    decoder_start_id: int = 0,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced logits (B, L, V) and the targets (B, L) with PAD as IGNORE_INDEX (not scored)."""
    decoder_input_ids = shift_right(targets, decoder_start_id, pad_id)  # (B, L)
    logits = model(inputs, decoder_input_ids, attention_mask=attention_mask)  # (B, L, V)
    return logits, targets.masked_fill(targets == pad_id, IGNORE_INDEX)
