"""Log-likelihood of a continuation given a context: the one scoring path for every family.

Zero-shot benchmarks (minimal pairs, multiple choice), classification by label
log-probability and the lm-eval adapter all ask the same question: how likely
is this continuation after this context? One function answers it, batched:

    decoder / pooled (causal)                 t5 (encoder-decoder)
    ids  = [BOS] ctx... cont...               encoder  = ctx... EOS
    scored         ^^^^^^^ (next-unit NLL)    decoder  = [start] cont... -> scores cont...

Context and continuation are encoded separately and joined, so a continuation's
units never depend on where a subword merge across the seam would fall. An
empty context is allowed (a whole sentence scored after BOS, as for BLiMP).
Too-long causal inputs lose context from the left; the continuation is kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F


class Family(Protocol):
    """What scoring needs of a model family (a `stlm.registry` row); read-only, as a row's class attributes are."""

    @property
    def name(self) -> str: ...

    @property
    def encoder_decoder(self) -> bool: ...


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float  # sum over the continuation's units of log P(unit | everything before), nats
    n_units: int  # ids scored (bytes for byte tokenizers)
    n_bytes: int  # UTF-8 bytes of the continuation text
    greedy: bool  # every continuation unit is the model's argmax


@torch.inference_mode()
def score_continuations(
    model: torch.nn.Module,
    tokenizer: Any,
    family: Family,
    requests: Sequence[tuple[str, str]],
    *,
    batch_size: int = 16,
    max_len: int | None = None,
    truncate_long: bool = False,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
    progress: bool = False,
    eos: bool = False,
) -> list[ContinuationScore]:
    """Score (context, continuation) pairs; results come back in request order.

    `max_len` caps the ids fed to a causal model (default: the model config's
    max_seq_len); a continuation longer than that is an error, not a silent cut,
    unless `truncate_long`: then only its last max_len units are scored (the
    rest is context), as lm-eval does, and `n_units` says how many were.
    `eos=True` scores the continuation followed by EOS: a whole answer, so a
    label that is a prefix of another ("data" vs "data types") is not favoured.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i, (_, continuation) in enumerate(requests):
        if not continuation:
            raise ValueError(f"request {i} has an empty continuation; there is nothing to score")
    if max_len is None:
        max_len = getattr(getattr(model, "config", None), "max_seq_len", None)
    if family.encoder_decoder:
        encoded = [_encode_seq2seq(tokenizer, ctx, cont, eos) for ctx, cont in requests]
        score_batch = _score_seq2seq
    else:
        encoded = [
            _encode_causal(tokenizer, ctx, cont, max_len, i, eos=eos, truncate_long=truncate_long)
            for i, (ctx, cont) in enumerate(requests)
        ]
        score_batch = _score_causal

    # Longest first: similar lengths share a batch, and the first batch shows the peak memory.
    order = sorted(range(len(requests)), key=lambda i: -sum(len(part) for part in encoded[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="scoring", unit="batch", leave=False)
    results: list[ContinuationScore | None] = [None] * len(requests)
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            with autocast or contextlib.nullcontext():
                scored = score_batch(model, tokenizer, [encoded[i] for i in batch], device)
            for i, (logprob, greedy) in zip(batch, scored):
                cont_ids = encoded[i][-1]
                results[i] = ContinuationScore(
                    logprob=logprob,
                    n_units=len(cont_ids),
                    n_bytes=len(requests[i][1].encode("utf-8")),
                    greedy=greedy,
                )
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


# --- causal: one sequence, scored on its tail --------------------------------------------------


def _encode_causal(
    tokenizer: Any, context: str, continuation: str, max_len: int | None, index: int, *, eos: bool, truncate_long: bool
):
    prefix = tokenizer.encode(context, bos=True)  # [BOS] ctx
    cont = tokenizer.encode(continuation, eos=eos)
    if not prefix:
        raise ValueError("a causal model needs a BOS id or a non-empty context to condition on")
    if max_len is not None:
        # Inputs are ids[:-1], so len(prefix) + len(cont) - 1 ids are fed.
        room = max_len + 1 - len(cont)
        if room < 1 and truncate_long:  # score the continuation's last max_len units after its own head
            ids = (prefix + cont)[-(max_len + 1) :]
            return ids[:1], ids[1:]
        if room < 1:
            raise ValueError(f"request {index}: continuation of {len(cont)} ids does not fit max_len {max_len}")
        prefix = prefix[-room:]
    return prefix, cont


def _score_causal(model, tokenizer, items, device) -> list[tuple[float, bool]]:
    lengths = [len(p) + len(c) for p, c in items]
    width = max(lengths) - 1
    pad = tokenizer.pad_id
    inputs = torch.full((len(items), width), pad, dtype=torch.long)
    targets = torch.full((len(items), width), -100, dtype=torch.long)  # -100: not scored
    for row, (prefix, cont) in enumerate(items):
        ids = torch.tensor(prefix + cont, dtype=torch.long)
        n = ids.numel() - 1
        inputs[row, :n] = ids[:-1]
        targets[row, len(prefix) - 1 : n] = ids[len(prefix) :]  # the continuation's positions
    # Padding sits after every scored position of its row, so a causal model never sees it.
    logits = model(inputs.to(device)).float()  # (B, W, V)
    return _sum_targets(logits, targets.to(device))


# --- encoder-decoder: context to the encoder, continuation as the target -----------------------


def _encode_seq2seq(tokenizer: Any, context: str, continuation: str, eos: bool):
    return tokenizer.encode(context, eos=True), tokenizer.encode(continuation, eos=eos)


def _score_seq2seq(model, tokenizer, items, device) -> list[tuple[float, bool]]:
    cfg = model.config
    src_w = max(len(src) for src, _ in items)
    tgt_w = max(len(tgt) for _, tgt in items)
    source = torch.full((len(items), src_w), cfg.pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), src_w), dtype=torch.bool)
    dec_in = torch.full((len(items), tgt_w), cfg.pad_id, dtype=torch.long)
    targets = torch.full((len(items), tgt_w), -100, dtype=torch.long)
    for row, (src, tgt) in enumerate(items):
        source[row, : len(src)] = torch.tensor(src)
        mask[row, : len(src)] = True
        dec_in[row, 0] = cfg.decoder_start_id
        dec_in[row, 1 : len(tgt)] = torch.tensor(tgt[:-1])
        targets[row, : len(tgt)] = torch.tensor(tgt)
    logits = model(source.to(device), dec_in.to(device), mask.to(device)).float()  # (B, L, V)
    return _sum_targets(logits, targets.to(device))


def _sum_targets(logits: torch.Tensor, targets: torch.Tensor) -> list[tuple[float, bool]]:
    """Per row: summed log-probability of the scored targets, and whether each is the argmax."""
    scored = targets != -100  # (B, W)
    logprob = -F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")  # (B, W)
    hits = (logits.argmax(-1) == targets) | ~scored  # (B, W)
    totals = (logprob * scored).double().sum(1).cpu().tolist()
    greedy = hits.all(1).cpu().tolist()
    return list(zip(totals, greedy))
