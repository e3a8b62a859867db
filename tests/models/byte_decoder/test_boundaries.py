"""Boundary rules: what closes a patch, documents, the cap, the entropy fit, mean patch length."""

from __future__ import annotations

import random

import pytest
import torch

from stlm.models.byte_decoder import PooledByteLM, mean_patch_length
from stlm.models.byte_decoder.boundaries import (
    BoundaryRule,
    cap_patches,
    document_ids,
    is_spacelike,
    patch_starts,
    preceding_ids,
    rule_closes,
)
from tests.models.byte_decoder.helpers import BOS, EOS, PAD, english_sample, packed, small_config


def patches(cfg_or_model, text: str, *, bos: bool = True) -> list[str]:
    """The text cut where the rule closes patches (^ = BOS, $ = EOS)."""
    ids = ([BOS] if bos else []) + list(text.encode())
    ids = torch.tensor([ids])
    rule = cfg_or_model.boundaries if isinstance(cfg_or_model, PooledByteLM) else BoundaryRule(cfg_or_model)
    closes = rule_closes(rule, ids, PAD)[0]
    out, current = [], b""
    for token, close in zip(ids[0].tolist(), closes.tolist()):
        current += {BOS: b"^", EOS: b"$"}.get(token, bytes([token]) if token < 256 else b"")
        if close:
            out.append(current.decode())
            current = b""
    return out + ([current.decode()] if current else [])


def test_space_rule_closes_on_the_first_space_like_byte_after_a_word():
    cfg = small_config(boundary="space", max_patch_len=8)
    assert patches(cfg, "The cat sat.  Hi, you") == ["^The ", "cat ", "sat.", "  Hi,", " you"]
    # UTF-8 letters are word bytes; the cap cuts long runs.
    assert patches(cfg, "café au lait") == ["^café ", "au ", "lait"]
    assert patches(cfg, "abcdefghijklmnopqrst x") == ["^abcdefg", "hijklmno", "pqrst ", "x"]
    assert patches(cfg, "a" * 8, bos=False) == ["a" * 8]  # the window start counts as a start


def test_space_like_bytes():
    spacelike = is_spacelike(torch.arange(264))
    expected = {i for i in range(128) if not chr(i).isalnum()} | set(range(256, 264))
    assert {i for i in range(264) if spacelike[i]} == expected


def test_fixed_rule_counts_from_each_document_start():
    cfg = small_config(boundary="fixed:3")
    assert patches(cfg, "abcdefgh") == ["^ab", "cde", "fgh"]
    ids = torch.tensor([packed(b"abcd", b"efghij")])  # ^abcd$^efghij$
    closes = rule_closes(BoundaryRule(cfg), ids, PAD)[0].tolist()
    starts = patch_starts(torch.tensor([closes]), ids, BOS)[0].tolist()
    assert [i for i, c in enumerate(closes) if c] == [2, 5, 8, 11, 13]  # EOS at 5 and 13 closes
    assert [i for i, s in enumerate(starts) if s] == [0, 3, 6, 9, 12]


def test_eos_closes_and_bos_starts_a_patch_under_every_rule():
    for boundary in ("space", "fixed:5"):
        rule = BoundaryRule(small_config(boundary=boundary))
        ids = torch.tensor([[BOS, 97, 98, EOS, 99, 100, BOS, 101, 102]])  # a document cut short by a BOS
        closes = rule_closes(rule, ids, PAD)
        starts = patch_starts(closes, ids, BOS)[0].tolist()
        assert closes[0, 3] and starts[6] and not closes[0, 5]  # the patch before the BOS stays open


def test_documents_and_look_back_stop_at_bos():
    ids = torch.tensor([[65, 66, BOS, 67, 68, EOS, BOS, 69]])
    doc = document_ids(ids, BOS)
    assert doc.tolist() == [[0, 0, 1, 1, 1, 1, 2, 2]]
    before = preceding_ids(ids, doc, 3, PAD)
    assert before[0, 4].tolist() == [67, BOS, PAD]  # byte 68 sees 67, BOS, then nothing of document 0
    assert before[0, 7].tolist() == [BOS, PAD, PAD]
    assert before[0, 1].tolist() == [65, PAD, PAD]  # the window start


def test_vectorised_cap_equals_the_sequential_rule():
    random.seed(0)
    for cap in (1, 2, 3, 5):
        for _ in range(20):
            t = random.randint(1, 60)
            natural = torch.tensor([[random.random() < 0.15 for _ in range(t)]])
            ids = torch.tensor([[BOS if random.random() < 0.05 else 97 for _ in range(t)]])
            expected, count = [], 0
            for i in range(t):
                if i == 0 or expected[-1] or ids[0, i] == BOS:
                    count = 0
                count += 1
                expected.append(bool(natural[0, i]) or count == cap)
            assert cap_patches(natural, ids, cap, BOS)[0].tolist() == expected


def test_entropy_fit_hits_the_target_patch_length_on_held_out_text():
    sample = torch.tensor(english_sample(200_000))
    fit, held_out = sample[:150_000], sample[150_000:]
    torch.manual_seed(0)
    net = PooledByteLM(small_config(boundary="entropy", max_patch_len=12))
    assert not net.boundaries.fitted and mean_patch_length(net, held_out) > 10  # only EOS and the cap close
    reached = net.fit_boundaries(fit, target_patch_len=6.0)
    assert net.boundaries.fitted and abs(reached - 6.0) < 0.3
    assert abs(mean_patch_length(net, held_out) - 6.0) < 0.6
    # High-entropy contexts are word ends: after "the " the next byte is anyone's guess.
    assert patches(net, "the cat")[0].startswith("^the")
    with pytest.raises(ValueError, match="fitted"):
        mean_patch_length(net.config, held_out)


def test_entropy_fit_defaults_to_the_configs_patch_length():
    # Longer patches are preset data (entropy_patch_len): fit_boundaries and training read it.
    sample = torch.tensor(english_sample(150_000))
    for target in (4.0, 8.0):
        net = PooledByteLM(small_config(boundary="entropy", max_patch_len=16, entropy_patch_len=target))
        assert abs(net.fit_boundaries(sample) - target) < 0.1 * target


def test_mean_patch_length_of_the_space_rule_on_english():
    sample = english_sample(100_000)
    length = mean_patch_length(small_config(boundary="space", max_patch_len=12), sample)
    assert 5.5 < length < 7.5  # "about 6 bytes per patch on English"
    assert mean_patch_length(small_config(boundary="fixed:4"), sample) == pytest.approx(4.0, abs=0.05)
    assert mean_patch_length(small_config(boundary="fixed:1"), sample) == 1.0
    with pytest.raises(TypeError):
        mean_patch_length("space", sample)
