"""Pooling bookkeeping: the layout of the module diagram, pool/unpool against loops, attention masks."""

from __future__ import annotations

import torch

from stlm.models.byte_decoder.boundaries import BoundaryRule, document_ids, rule_closes
from stlm.models.byte_decoder.pooling import (
    byte_attention_mask,
    patch_attention_mask,
    patch_layout,
    pool,
    pool_open_patch,
    unpool,
)
from tests.models.byte_decoder.helpers import BOS, EOS, PAD, small_config

# The example drawn in pooling.py's docstring.
DIAGRAM = [BOS, *b"The cat ", EOS, BOS, *b"Ok "]


def diagram_layout():
    ids = torch.tensor([DIAGRAM])
    doc = document_ids(ids, BOS)
    closes = rule_closes(BoundaryRule(small_config(boundary="space")), ids, PAD)
    return ids, doc, closes, patch_layout(closes, ids, doc, BOS)


def test_layout_of_the_diagram():
    ids, doc, closes, layout = diagram_layout()
    assert doc[0].tolist() == [1] * 10 + [2] * 4
    assert [i for i, c in enumerate(closes[0].tolist()) if c] == [4, 8, 9, 13]
    assert layout.patch_id[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 3, 3]
    assert layout.patch_doc[0].tolist() == [1, 1, 1, 2]
    assert layout.patch_len[0].tolist() == [5, 4, 1, 4]
    assert layout.patch_last[0].tolist() == [4, 8, 9, 13]
    # 0 = no closed patch yet, p + 1 = patch p: a byte reads only patches closed at or before it.
    assert layout.read[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 0, 0, 0, 4]


def test_every_read_patch_closed_at_or_before_the_reader_in_its_document():
    torch.manual_seed(0)
    ids = torch.randint(0, 140, (4, 200))
    ids[ids > 128] = 32
    ids[:, 50] = BOS
    ids[1, 120] = EOS
    doc = document_ids(ids, BOS)
    closes = rule_closes(BoundaryRule(small_config(boundary="space")), ids, PAD)
    layout = patch_layout(closes, ids, doc, BOS)
    for b in range(4):
        for t in range(200):
            q = int(layout.read[b, t]) - 1
            if q >= 0:
                assert int(layout.patch_last[b, q]) <= t and bool(closes[b, layout.patch_last[b, q]])
                assert int(layout.patch_doc[b, q]) == int(doc[b, t])


def test_pool_and_unpool_match_loops():
    ids, doc, closes, layout = diagram_layout()
    torch.manual_seed(0)
    h = torch.randn(1, ids.shape[1], 6)
    pooled = pool(h, layout, "mean_last")  # (1, P, 12)
    for p in range(layout.n_patches):
        members = (layout.patch_id[0] == p).nonzero().flatten()
        torch.testing.assert_close(pooled[0, p, :6], h[0, members].mean(0))
        torch.testing.assert_close(pooled[0, p, 6:], h[0, members[-1]])
        torch.testing.assert_close(
            pool_open_patch(h[0, members].sum(0), len(members), h[0, members[-1]], "mean_last"), pooled[0, p]
        )
    assert pool(h, layout, "mean").shape == (1, 4, 6) and pool(h, layout, "last").shape == (1, 4, 6)
    g, empty = torch.randn(1, layout.n_patches, 6), torch.randn(6)
    out = unpool(g, empty, layout)
    for t in range(ids.shape[1]):
        q = int(layout.read[0, t])
        torch.testing.assert_close(out[0, t], empty if q == 0 else g[0, q - 1])


def test_padding_patches_in_a_batch():
    ids = torch.tensor([DIAGRAM, [*b"abcdefghijklmn"]])  # row 1: no BOS, no spaces: capped patches
    doc = document_ids(ids, BOS)
    closes = rule_closes(BoundaryRule(small_config(boundary="space", max_patch_len=12)), ids, PAD)
    layout = patch_layout(closes, ids, doc, BOS)
    assert layout.n_patches == 4
    assert layout.patch_doc[1].tolist() == [0, 0, -1, -1] and layout.patch_len[1].tolist() == [12, 2, 0, 0]
    mask = patch_attention_mask(layout.patch_doc)[:, 0]
    assert mask[1].tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    assert mask.any(-1).all()  # no empty row, no NaN


def test_attention_masks_are_causal_windowed_and_per_document():
    doc = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 2]])
    mask = byte_attention_mask(doc, window=2)[0, 0]
    for q in range(8):
        for k in range(8):
            assert bool(mask[q, k]) == (k <= q and q - k < 2 and doc[0, q] == doc[0, k])
    patch_mask = patch_attention_mask(torch.tensor([[1, 1, 2, 2, 2]]))[0, 0]
    assert patch_mask.tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 1],
    ]
