"""Bits per byte of a causal model over a token stream, with a sliding window.

BPB = (sum of next-id negative log-likelihoods, in nats) / (ln 2 x UTF-8 bytes).
Each target id stands for a known number of UTF-8 bytes, `byte_lengths[id]`
(the tokenizer's `byte_lengths()`): 1 for a byte id, the length of its piece
for a BPE token, 0 for BOS, EOS and padding. Only targets with bytes count, in
the sum and in the denominator, so the denominator is exactly the UTF-8 length
of the scored text whatever the tokenizer. Without `byte_lengths`, ids below
256 are one byte each and every other id none (all of stlm's byte tokenizers
for decoders). The first id of the stream (BOS) is context only.

Long streams are scored by windows of `context` ids moved by `stride`:

    stream   s0 s1 s2 s3 s4 s5 s6 s7 s8 s9          context 4, stride 2
    window0  [s0 s1 s2 s3] -> scores targets s1..s4
    window1        [s2 s3 s4 s5] -> scores s5 s6  (s3, s4 already scored)
    window2              [s4 s5 s6 s7] -> scores s7 s8
    ...

Every target is scored exactly once; after the first window each one sees at
least context - stride ids of history. stride == context is the cheap,
non-overlapping setting; a smaller stride gives more context and lower BPB.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

N_BYTE_IDS = 256  # ids below this are bytes in every byte tokenizer of stlm


@dataclass(frozen=True)
class BPBResult:
    bits_per_byte: float
    nats: float  # summed negative log-likelihood of the scored bytes
    n_bytes: int  # UTF-8 bytes scored (the denominator)
    context: int
    stride: int

    def to_dict(self) -> dict:
        return asdict(self)


def window_plan(n_ids: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows as (start, end, first_scored_target) over a stream of n_ids.

    A window feeds ids [start, end) and predicts targets start+1 .. end; targets
    before `first_scored_target` were scored by an earlier window.
    """
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be in [1, context={context}], got {stride}")
    plan, start, scored_up_to = [], 0, 0  # targets 1..scored_up_to are done
    while scored_up_to < n_ids - 1:
        end = min(start + context, n_ids - 1)
        plan.append((start, end, scored_up_to + 1))
        scored_up_to = end
        start += stride
    return plan


def byte_lengths_of(stream: torch.Tensor, byte_lengths: np.ndarray | None) -> torch.Tensor:
    """(max id + 1,) or (V,) UTF-8 bytes per id: the tokenizer's table, or 1 for ids < 256 and 0 else."""
    if byte_lengths is None:
        return (torch.arange(int(stream.max()) + 1) < N_BYTE_IDS).long()  # (max id + 1,)
    lengths = torch.as_tensor(np.asarray(byte_lengths, dtype=np.int64))  # (V,)
    if int(stream.max()) >= lengths.numel() or int(stream.min()) < 0:
        raise ValueError(f"stream holds ids outside the {lengths.numel()} ids that byte_lengths covers")
    return lengths


def _stream_ids(stream: np.ndarray | torch.Tensor) -> torch.Tensor:
    ids = torch.as_tensor(np.asarray(stream, dtype=np.int64))
    if ids.ndim != 1 or ids.numel() < 2:
        raise ValueError("need a 1-D stream of at least 2 ids to score")
    return ids  # (N,)


@torch.inference_mode()
def target_nats(
    model: torch.nn.Module,
    stream: np.ndarray | torch.Tensor,
    *,
    context: int,
    stride: int | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """(N,) float64 negative log-likelihood in nats of each id of a 1-D stream given the ids before it,
    by the windows above; entry 0 (the first id, context only) is 0."""
    stride = context if stride is None else stride
    ids = _stream_ids(stream)
    plan = window_plan(ids.numel(), context, stride)
    nats = torch.zeros(ids.numel(), dtype=torch.float64)
    was_training = model.training
    model.eval()
    batches = [plan[i : i + batch_size] for i in range(0, len(plan), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="bpb", unit="batch", leave=False)
    try:
        for batch in batches:
            width = max(end - start for start, end, _ in batch)
            inputs = torch.zeros((len(batch), width), dtype=torch.long)
            targets = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (start, end, _) in enumerate(batch):
                inputs[row, : end - start] = ids[start:end]
                targets[row, : end - start] = ids[start + 1 : end + 1]
            with autocast or contextlib.nullcontext():
                logits = model(inputs.to(device))  # (b, width, V)
            nll = F.cross_entropy(logits.float().flatten(0, 1), targets.to(device).flatten(), reduction="none")
            nll = nll.view(len(batch), width).double().cpu()  # (b, width)
            for row, (start, end, first) in enumerate(batch):
                skip = first - (start + 1)  # targets already scored by an earlier window
                nats[first : end + 1] = nll[row, skip : end - start]
    finally:
        model.train(was_training)
    return nats


def bits_per_byte(
    model: torch.nn.Module,
    stream: np.ndarray | torch.Tensor,
    *,
    context: int,
    stride: int | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
    progress: bool = False,
    byte_lengths: np.ndarray | None = None,
) -> BPBResult:
    """Score a 1-D id stream (e.g. BOS + bytes, or a packed corpus split).

    byte_lengths: (vocab,) UTF-8 bytes of each id (`tokenizer.byte_lengths()`);
    None counts ids < 256 as one byte and the rest as none.
    """
    stride = context if stride is None else stride
    ids = _stream_ids(stream)
    lengths = byte_lengths_of(ids, byte_lengths)[ids]  # (N,) bytes each target stands for
    lengths[0] = 0  # the first id is context only
    n_bytes = int(lengths.sum())
    if n_bytes == 0:
        raise ValueError("the stream holds no bytes to score")
    nats_each = target_nats(
        model,
        ids,
        context=context,
        stride=stride,
        batch_size=batch_size,
        device=device,
        autocast=autocast,
        progress=progress,
    )
    nats = float(nats_each[lengths > 0].sum())  # specials add no bytes and no loss
    return BPBResult(
        bits_per_byte=nats / (math.log(2) * n_bytes),
        nats=nats,
        n_bytes=n_bytes,
        context=context,
        stride=stride,
    )


UNIFORM_BPB = 8.0  # a uniform guess over the 256 byte values: log2(256) bits per byte
# What each reference of `reference_bpb` is, in the words tables and reports use.
REFERENCE_LABELS = {
    "uniform": "uniform guess over 256 bytes",
    "unigram": "order-0 (unigram) entropy of the same bytes",
    "token_unigram": "order-0 (unigram) entropy of the same tokens, per byte",
}


def reference_bpb(ids: np.ndarray, tokenizer) -> dict[str, float]:
    """Bits per byte that need no model, on the bytes `ids` stand for: what a trained model must beat.

        uniform        8.0, a uniform guess over the 256 byte values
        unigram        order-0 entropy of the bytes themselves: the best any model of
                       byte frequencies alone can do on them
        token_unigram  token tokenizers only (an id of several bytes): order-0 entropy
                       of the ids that stand for text, times ids per byte; the same
                       floor for a model of token frequencies (usually far below `unigram`)

    `tokenizer` gives `byte_lengths()` and `decode_bytes`. Both entropies come
    from one count of the ids, so a long corpus split costs one pass over it:
    the bytes of id i are counted count(i) times.
    """
    lengths = np.asarray(tokenizer.byte_lengths(), dtype=np.int64)  # (V,)
    counts = np.zeros(len(lengths), dtype=np.int64)  # (V,) occurrences of each id
    chunk = 1 << 24  # bincount widens to int64: count a memmap piece by piece
    for start in range(0, len(ids), chunk):
        counts += np.bincount(np.asarray(ids[start : start + chunk]), minlength=len(lengths))[: len(lengths)]
    counts[lengths == 0] = 0  # BOS, EOS, padding: no bytes
    byte_counts = np.zeros(256, dtype=np.int64)  # (256,) occurrences of each byte value
    for i in np.flatnonzero(counts):
        piece = np.frombuffer(tokenizer.decode_bytes([int(i)]), dtype=np.uint8)
        byte_counts += counts[i] * np.bincount(piece, minlength=256)
    refs = {"uniform": UNIFORM_BPB}
    n_bytes = int(byte_counts.sum())
    if n_bytes == 0:
        return refs
    refs["unigram"] = _entropy_bits(byte_counts)
    if lengths.max() > 1:
        refs["token_unigram"] = _entropy_bits(counts) * float(counts.sum()) / float(n_bytes)
    return refs


def _entropy_bits(counts: np.ndarray) -> float:
    """Entropy in bits of the distribution `counts` (occurrences per symbol)."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())
