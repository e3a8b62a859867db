"""Where patches end: documents, the boundary rules, and fitting the entropy rule.

A boundary rule answers one question per byte: does byte t CLOSE a patch? The
answer may depend only on bytes <= t. That is what makes the model causal: the
global output of a patch is handed to the bytes from its closing byte on, and
if "t closes" looked at byte t + 1, position t (which predicts byte t + 1)
would learn something about its own target from the mere shape of the patches.

Rules (`PooledByteConfig.boundary`):

    space     byte t closes when it is space-like and byte t-1 is not (the SpaceByte
              rule, read causally): "The cat sat." -> "The " "cat " "sat." so the
              global core runs on the space, just before the hard-to-predict first
              byte of the next word. Space-like = ASCII that is not a letter or
              digit (space, punctuation, newline) and the special ids; bytes >= 128
              (UTF-8 letters) are word bytes. ~6 bytes per patch on English.
    fixed:N   every N bytes (MEGABYTE); fixed:1 is the unpooled baseline.
    entropy   byte t closes when the next byte is hard to guess: the entropy of a
              smoothed trigram count model p(next | byte t-1, byte t), stored as a
              (V*V,) buffer in the model, exceeds a threshold fitted to hit a target
              mean patch length (the idea of BLT, with a count model instead of a
              small byte transformer). Fit it with `PooledByteLM.fit_boundaries`.

For every rule: EOS always closes, a BOS always starts a new patch (so no patch
spans two documents), and a patch is closed after `patch_cap` bytes
(max_patch_len, or N for fixed:N) so code, URLs and long runs stay bounded.

Documents are visible in the ids themselves: windows are packed
`BOS bytes EOS BOS bytes EOS ...`, so the document of byte t is the number of
BOS ids at or before t. A window that starts mid-document gives its first
partial document the number 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from stlm.models.byte_decoder.config import PooledByteConfig


def document_ids(ids: torch.Tensor, bos_id: int) -> torch.Tensor:
    """ids (B, T) -> doc (B, T): how many BOS ids occur at or before each position."""
    return torch.cumsum(ids == bos_id, dim=1)


def preceding_ids(ids: torch.Tensor, doc: torch.Tensor, k: int, pad_id: int) -> torch.Tensor:
    """ids, doc (B, T) -> (B, T, k): bytes t-1, t-2, ..., t-k, or pad_id outside byte t's document.

    Everything that looks back (n-gram hashes, boundary rules) goes through
    this, so no input feature can reach across a document boundary.
    """
    b, t = ids.shape
    out = ids.new_full((b, t, k), pad_id)
    for j in range(1, min(k, t - 1) + 1):  # k <= 7: a loop over look-back distance, not over time
        same_doc = doc[:, j:] == doc[:, :-j]  # (B, T-j)
        out[:, j:, j - 1] = torch.where(same_doc, ids[:, :-j], pad_id)
    return out


def is_spacelike(ids: torch.Tensor) -> torch.Tensor:
    """(...) ids -> (...) bool: True for ASCII non-alphanumerics and special ids (>= 256)."""
    digit = (ids >= 48) & (ids <= 57)
    upper = (ids >= 65) & (ids <= 90)
    lower = (ids >= 97) & (ids <= 122)
    utf8 = (ids >= 128) & (ids < 256)  # any byte of a multi-byte character is part of a word
    return ~(digit | upper | lower | utf8)


def cap_patches(natural: torch.Tensor, ids: torch.Tensor, cap: int, bos_id: int) -> torch.Tensor:
    """natural closes (B, T) -> closes (B, T) with a patch closed after every `cap` bytes.

    Sequentially: count bytes since the patch began and close at `cap`. The
    count restarts at every close, which looks like a scan, but natural closes
    do not depend on the cap: between two natural closes (a "segment") the cap
    closes fall at segment positions cap-1, 2*cap-1, ... So: mark where
    segments start, find each byte's segment start with a running max, and
    close where (position in segment + 1) is a multiple of cap.
    """
    b, t = ids.shape
    if cap == 1:
        return torch.ones_like(natural)
    after_close = torch.ones_like(natural)
    after_close[:, 1:] = natural[:, :-1]  # position 0 starts a segment
    seg_start = after_close | (ids == bos_id)  # (B, T)
    pos = torch.arange(t, device=ids.device).expand(b, t)  # (B, T)
    start = torch.where(seg_start, pos, 0).cummax(dim=1).values  # (B, T): latest segment start <= t
    return natural | ((pos - start + 1) % cap == 0)


class BoundaryRule(nn.Module):
    """Decides which bytes close a patch. Holds the entropy table for the entropy rule.

    `natural(ids, prev)` is the per-byte rule (elementwise, so the same call
    serves the full forward and one generation step); `forward` adds the cap.
    """

    def __init__(self, cfg: PooledByteConfig) -> None:
        super().__init__()
        self.kind = cfg.boundary_kind
        self.cap = cfg.patch_cap
        self.vocab_size = cfg.vocab_size
        self.bos_id, self.eos_id = cfg.bos_id, cfg.eos_id
        if self.kind == "entropy":
            # Persistent buffers: they are data fitted to a corpus, so they travel
            # in checkpoints, but they are not trained, so they are no parameters.
            # Unfitted (threshold +inf) the rule closes only at the cap and at EOS.
            v = cfg.vocab_size
            self.register_buffer("entropy", torch.zeros(v * v))
            self.register_buffer("threshold", torch.full((), math.inf))

    def reset_parameters(self) -> None:
        if self.kind == "entropy":
            self.entropy.zero_()
            self.threshold.fill_(math.inf)

    @property
    def fitted(self) -> bool:
        return self.kind != "entropy" or bool(torch.isfinite(self.threshold))

    def natural(self, ids: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """ids, prev (...) -> (...) bool: the rule's own closes at each byte, EOS included.

        prev is the byte before (pad_id at the start of a document or window).
        """
        closes = ids == self.eos_id
        if self.kind == "space":
            closes = closes | (is_spacelike(ids) & ~is_spacelike(prev))
        elif self.kind == "entropy":
            closes = closes | (self.entropy[prev * self.vocab_size + ids] > self.threshold)
        return closes

    def forward(self, ids: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """ids, prev (B, T) -> closes (B, T) bool: byte t is the last byte of its patch."""
        return cap_patches(self.natural(ids, prev), ids, self.cap, self.bos_id)

    def load_fit(self, entropy: torch.Tensor, threshold: float) -> None:
        """Install a fitted entropy table (V*V,) and threshold."""
        if self.kind != "entropy":
            raise ValueError(f"only the entropy rule is fitted, this model uses {self.kind!r}")
        self.entropy.copy_(entropy.reshape(-1))
        self.threshold.fill_(threshold)


def patch_starts(closes: torch.Tensor, ids: torch.Tensor, bos_id: int) -> torch.Tensor:
    """closes, ids (B, T) -> (B, T) bool: byte t is the first byte of a patch.

    A patch starts after every close, at every BOS (a new document never joins
    the previous document's open patch) and at the start of the window.
    """
    starts = torch.ones_like(closes)
    starts[:, 1:] = closes[:, :-1]
    return starts | (ids == bos_id)


def rule_closes(rule: BoundaryRule, ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """ids (B, T) -> closes (B, T) for a whole window: documents, look-back and cap included."""
    doc = document_ids(ids, rule.bos_id)
    prev = preceding_ids(ids, doc, 1, pad_id)[..., 0]  # (B, T)
    return rule(ids, prev)


def mean_patch_length(model_or_config: Any, ids: Any) -> float:
    """Mean ids per patch when the model (or a config's rule) patches `ids` ((T,) or (B, T)).

    Every id counts (specials too): that is what the local layers process per
    global step. The entropy rule needs a fitted model, not just a config.
    """
    rule = getattr(model_or_config, "boundaries", None)
    cfg = getattr(model_or_config, "config", model_or_config)
    if rule is None:
        if not isinstance(cfg, PooledByteConfig):
            raise TypeError(f"need a PooledByteLM or a PooledByteConfig, got {type(model_or_config).__name__}")
        if cfg.boundary_kind == "entropy":
            raise ValueError("the entropy rule needs its fitted table: pass the fitted model, not its config")
        rule = BoundaryRule(cfg)
    ids = torch.as_tensor(ids).long()
    ids = ids.reshape(1, -1) if ids.ndim == 1 else ids
    buffers = list(rule.buffers())
    if buffers:  # the fitted entropy table may sit on an accelerator
        ids = ids.to(buffers[0].device)
    with torch.no_grad():
        closes = rule_closes(rule, ids, cfg.pad_id)
        n_patches = int(patch_starts(closes, ids, cfg.bos_id).sum())
    return ids.numel() / n_patches


# --- fitting the entropy rule ---------------------------------------------------------------------


def fit_entropy_table(ids: Any, cfg: PooledByteConfig, prior: float = 4.0) -> torch.Tensor:
    """Entropy (nats) of next byte given (byte t-1, byte t), as a (V*V,) float32 table.

    Counts come from the id stream (documents split at BOS, as in training).
    Each order is smoothed toward the one below with a Dirichlet prior of
    strength `prior`: p2(n | a, b) = (c(a, b, n) + prior * p1(n | b)) / (c(a, b) + prior),
    p1 likewise toward the add-one unigram. Unseen contexts get the entropy of
    p1(. | b), so rare contexts back off to the bigram instead of looking certain.
    """
    v, pad = cfg.vocab_size, cfg.pad_id
    ids = torch.as_tensor(ids).long().reshape(1, -1)
    doc = document_ids(ids, cfg.bos_id)
    prev = preceding_ids(ids, doc, 1, pad)[0, :, 0]  # (N,)
    ids, doc = ids[0], doc[0]
    inside = doc[1:] == doc[:-1]  # transitions t -> t+1 inside one document
    cur, before, nxt = ids[:-1][inside], prev[:-1][inside], ids[1:][inside]

    unigram = torch.bincount(nxt, minlength=v).double() + 1.0  # (V,)
    unigram /= unigram.sum()
    c1 = torch.bincount(cur * v + nxt, minlength=v * v).view(v, v).double()  # (V, V)
    p1 = (c1 + prior * unigram) / (c1.sum(1, keepdim=True) + prior)  # (V, V)
    table = _entropy(p1).repeat(v)  # (V*V,): context (a, b) at a*V + b backs off to row b

    ctx = before * v + cur  # (M,)
    seen, row = torch.unique(ctx, return_inverse=True)  # (S,), (M,)
    c2 = torch.zeros(len(seen), v, dtype=torch.float64)
    c2.index_put_((row, nxt), torch.ones_like(row, dtype=torch.float64), accumulate=True)  # (S, V)
    p2 = (c2 + prior * p1[seen % v]) / (c2.sum(1, keepdim=True) + prior)  # (S, V)
    table[seen] = _entropy(p2)
    return table.float()


def fit_entropy_threshold(ids: Any, cfg: PooledByteConfig, entropy: torch.Tensor, target_patch_len: float) -> float:
    """The threshold whose mean patch length on `ids` is closest to `target_patch_len`.

    Mean patch length only grows with the threshold (fewer natural closes), so
    a binary search over the distinct entropy values finds it in ~20 passes.
    """
    ids = torch.as_tensor(ids).long().reshape(1, -1)
    doc = document_ids(ids, cfg.bos_id)
    prev = preceding_ids(ids, doc, 1, cfg.pad_id)[..., 0]  # (1, N)
    scores = entropy[prev * cfg.vocab_size + ids]  # (1, N)
    eos = ids == cfg.eos_id
    candidates = torch.unique(scores)  # ascending

    def length(threshold: float) -> float:
        closes = cap_patches(eos | (scores > threshold), ids, cfg.patch_cap, cfg.bos_id)
        return ids.numel() / int(patch_starts(closes, ids, cfg.bos_id).sum())

    lo, hi = 0, len(candidates) - 1  # find the first candidate whose length reaches the target
    while lo < hi:
        mid = (lo + hi) // 2
        if length(float(candidates[mid])) >= target_patch_len:
            hi = mid
        else:
            lo = mid + 1
    options = [float(candidates[i]) for i in (lo - 1, lo) if 0 <= i < len(candidates)]
    return min(options, key=lambda th: abs(length(th) - target_patch_len))


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Rows of probabilities (..., V) -> entropy in nats (...)."""
    return -(p * p.clamp_min(1e-300).log()).sum(-1)
