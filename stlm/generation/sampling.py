"""Choosing the next token from logits: greedy, temperature, top-k and nucleus (top-p).

Filters apply in the usual order: temperature scales the logits, top-k keeps
the k most likely tokens, top-p keeps the smallest set of the remaining tokens
whose probability reaches p, and one token is drawn from what is left.
"""

from __future__ import annotations

import math

import torch


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ValueError naming the first bad argument; shared with the decoding loops."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be finite and >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")


def check_max_new_tokens(max_new_tokens: int) -> None:
    """Raise ValueError unless max_new_tokens is an integer >= 0; shared with the decoding loops."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row: logits (B, V) -> ids (B,) as a LongTensor on the logits' device.

    temperature 0 is greedy (argmax; top_k and top_p then change nothing).
    top_k keeps the k highest logits; top_p keeps the smallest prefix of the
    sorted distribution whose mass reaches p, and always the single most likely
    token, so a tiny top_p is greedy. `generator` makes draws reproducible.
    """
    check_sampling_args(temperature, top_k, top_p)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (batch, vocab), got shape {tuple(logits.shape)}")
    if temperature == 0:
        return logits.argmax(dim=-1)

    # Softmax and cumulative sums in fp32: in bf16 the cumulative mass of a
    # 264-way distribution is off by a few percent, enough to move the cut.
    logits = logits.float() / temperature  # (B, V)
    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        kept = torch.topk(logits, top_k, dim=-1)  # values, indices (B, k)
        # Scatter the k winners into -inf rather than thresholding at the k-th
        # value, so ties at the threshold cannot keep more than k tokens.
        logits = torch.full_like(logits, -math.inf).scatter(-1, kept.indices, kept.values)  # (B, V)
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V) each
        probs = sorted_logits.softmax(dim=-1)  # (B, V)
        mass_before = probs.cumsum(dim=-1) - probs  # (B, V): probability of the more likely tokens
        # A token is dropped once the tokens before it already reach top_p. The
        # first token has nothing before it, so it is always kept.
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, -math.inf)
        logits = torch.full_like(logits, -math.inf).scatter(-1, order, sorted_logits)  # (B, V)
    probs = logits.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B, 1) -> (B,)
