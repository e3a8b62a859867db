r"""Pooling bytes into patches and handing patch outputs back to the bytes, causally.

Example with the space rule (_ is a space, | a document boundary):

    byte t       0  1  2  3  4  5  6  7  8  9 10 11 12 13
    id           B  T  h  e  _  c  a  t  _  E  B  O  k  _      B = BOS, E = EOS
    doc          1  1  1  1  1  1  1  1  1  1  2  2  2  2
    closes       .  .  .  .  x  .  .  .  x  x  .  .  .  x      byte t is the last byte of its patch
    patch_id     0  0  0  0  0  1  1  1  1  2  3  3  3  3      a BOS always starts a patch
                 \_____________/ \_______/ E  \_________/
    pool                p0          p1     p2     p3           (B, P, Dg): Linear(mean || last byte)
                        |           |      |      |
    global core       g0 <------ g1 <--- g2     g3             causal over patches, and only
                                                               within a document (p3 sees p3 only)
    read         -  -  -  -  g0 g0 g0 g0 g1 g2 -  -  -  g3     byte t gets the latest patch that
                                                               CLOSED at or before t, in its document
    ("-" = a learned "no closed patch yet" vector)

Why this is causal: position t predicts byte t+1. The global output g_p is
computed from the bytes of patches <= p of one document, all of which are at
or before p's closing byte c_p. Position t reads g_p only when c_p <= t, and
whether a byte closes depends only on bytes up to it (boundaries.py), so the
logits at t depend on bytes <= t only. The tempting alternative, giving every
byte of patch p the output g_p, lets byte 5 ("c") see "cat_" and predict "a"
for free: the loss collapses to nonsense-good numbers.

A patch cut short by a BOS (a document without EOS) never closed, so nothing
reads it; the last patch of a window may be open too and is likewise unread.

Everything here is index bookkeeping computed once per forward without
gradients, plus three differentiable gathers/scatters: no Python loop over
batch or time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stlm.models.byte_decoder.boundaries import patch_starts


@dataclass(frozen=True)
class PatchLayout:
    """Which patch each byte belongs to and which patch output each byte reads."""

    patch_id: torch.Tensor  # (B, T) long: patch of byte t, 0 .. n_patches[b] - 1
    patch_doc: torch.Tensor  # (B, P) long: document of each patch, -1 for padding patches
    patch_len: torch.Tensor  # (B, P) long: bytes in each patch (0 for padding)
    patch_last: torch.Tensor  # (B, P) long: position of each patch's last byte
    read: torch.Tensor  # (B, T) long: row of [no_patch, g_0, ..., g_{P-1}] that byte t reads

    @property
    def n_patches(self) -> int:
        return self.patch_doc.shape[1]


def patch_layout(closes: torch.Tensor, ids: torch.Tensor, doc: torch.Tensor, bos_id: int) -> PatchLayout:
    """closes, ids, doc (B, T) -> the layout, P = the most patches in any row."""
    b, t = ids.shape
    starts = patch_starts(closes, ids, bos_id)  # (B, T)
    patch_id = starts.cumsum(dim=1) - 1  # (B, T)
    # One host sync per forward: P sets the core's sequence length.
    p = int(patch_id[:, -1].max()) + 1
    # Every byte of a patch has the same document, so scattering all of them is safe.
    patch_doc = doc.new_full((b, p), -1).scatter_(1, patch_id, doc)  # (B, P)
    patch_len = torch.zeros_like(patch_doc).scatter_add_(1, patch_id, torch.ones_like(patch_id))  # (B, P)
    position = torch.arange(t, device=ids.device).expand(b, t)  # (B, T)
    patch_last = torch.zeros_like(patch_doc).scatter_reduce_(1, patch_id, position, "amax")  # (B, P)
    # Latest patch closed at or before t: this byte's patch if t closes it, else the one before,
    # which (inside a document) always closed, since only a close or a BOS starts a patch.
    latest = patch_id - (~closes).long()  # (B, T), -1 when byte t sits in the window's first patch
    latest_doc = patch_doc.gather(1, latest.clamp(min=0))  # (B, T)
    read = torch.where((latest >= 0) & (latest_doc == doc), latest + 1, 0)  # (B, T), 0 = no patch
    return PatchLayout(patch_id, patch_doc, patch_len, patch_last, read)


def pool(h: torch.Tensor, layout: PatchLayout, kind: str) -> torch.Tensor:
    """h (B, T, D) -> patch features (B, P, D) or (B, P, 2D) for kind "mean_last" (mean || last)."""
    b, t, d = h.shape
    p = layout.n_patches
    parts = []
    if kind in ("mean_last", "mean"):
        index = layout.patch_id.unsqueeze(-1).expand(b, t, d)  # (B, T, D)
        sums = h.new_zeros(b, p, d).scatter_add(1, index, h)  # (B, P, D)
        parts.append(sums / layout.patch_len.clamp(min=1).unsqueeze(-1).to(h.dtype))  # (B, P, D)
    if kind in ("mean_last", "last"):
        parts.append(h.gather(1, layout.patch_last.unsqueeze(-1).expand(b, p, d)))  # (B, P, D)
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def pool_open_patch(total: torch.Tensor, count: int, last: torch.Tensor, kind: str) -> torch.Tensor:
    """One patch during decoding: the sum (D,) and number of its bytes, its last byte (D,) -> features.

    The same features `pool` gives that patch in a full window (up to rounding).
    """
    if kind == "mean":
        return total / count
    if kind == "last":
        return last
    return torch.cat([total / count, last])  # (2D,)


def unpool(g: torch.Tensor, no_patch: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
    """g (B, P, D) patch outputs, no_patch (D,) -> (B, T, D): what each byte reads (see diagram).

    The result has no_patch's dtype (the byte residual stream's): under autocast
    g comes out of a bf16 matmul, and the residual stays fp32.
    """
    b, p, d = g.shape
    table = torch.cat([no_patch.expand(b, 1, d), g.to(no_patch.dtype)], dim=1)  # (B, P+1, D)
    t = layout.read.shape[1]
    return table.gather(1, layout.read.unsqueeze(-1).expand(b, t, d))  # (B, T, D)


def byte_attention_mask(doc: torch.Tensor, window: int) -> torch.Tensor:
    """doc (B, T) -> (B, 1, T, T) bool: query t sees keys t-window+1 .. t of its own document."""
    t = doc.shape[1]
    pos = torch.arange(t, device=doc.device)
    behind = pos[:, None] - pos[None, :]  # (T, T): query minus key
    band = (behind >= 0) & (behind < window)  # (T, T) causal sliding window
    return (band & (doc[:, :, None] == doc[:, None, :])).unsqueeze(1)  # (B, 1, T, T)


def patch_attention_mask(patch_doc: torch.Tensor) -> torch.Tensor:
    """patch_doc (B, P) -> (B, 1, P, P) bool: causal over patches, within one document.

    Padding patches (doc -1) see each other and themselves, so no row is empty
    (an all-False row would give NaN); real patches come first and never see them.
    """
    p = patch_doc.shape[1]
    causal = torch.ones(p, p, dtype=torch.bool, device=patch_doc.device).tril()  # (P, P)
    return (causal & (patch_doc[:, :, None] == patch_doc[:, None, :])).unsqueeze(1)  # (B, 1, P, P)
