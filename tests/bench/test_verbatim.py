"""Marking held-out bytes that repeat a passage of the training text, and splitting BPB by them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.verbatim import bytes_nats, masks, repeated_bytes, split_bpb, training_windows, window_hashes


def test_equal_windows_hash_equal_and_different_ones_differ():
    data = np.frombuffer(b"abcdXabcdYabce", dtype=np.uint8)
    h = window_hashes(data, 4)
    assert h.shape == (11,) and h[0] == h[5] and len(set(h.tolist())) == 10  # "abcd" twice, the rest apart
    assert window_hashes(data[:3], 4).shape == (0,)


def test_exactly_the_bytes_of_a_repeated_passage_are_marked():
    seen = training_windows(["the quick brown fox jumps over", "a lazy dog"], 8)
    text = "zzz brown fox zzzzz lazy dog"  # " brown fox " and " lazy dog" repeat; "zzz" does not
    mask = repeated_bytes(text, seen, 8)
    marked = "".join(c if m else "_" for c, m in zip(text, mask))
    assert marked == "___ brown fox _____ lazy dog"


def test_a_passage_across_two_training_documents_is_not_a_repeat():
    seen = training_windows(["abcd", "efgh"], 4)
    assert not repeated_bytes("cdef", seen, 4).any()
    assert repeated_bytes("xxefgh", seen, 4).tolist() == [False, False, True, True, True, True]


def test_masks_follow_utf8_bytes_and_concatenate_documents():
    seen = training_windows(["café au lait"], 5)
    mask = masks(["un café", "rien"], seen, 5)
    assert mask.size == len("un café".encode()) + len(b"rien")
    assert mask.tolist() == [False, False, False, True, True, True, True, True] + [False] * 4


def test_a_tokens_nats_are_spread_over_its_bytes_and_specials_have_none():
    nats = np.array([0.0, 1.0, 3.0, 0.5])  # BOS (context), a byte, a 3-byte token, EOS
    per_byte = bytes_nats(nats, np.array([0, 1, 3, 0]))
    assert per_byte.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_split_bpb_parts_average_to_the_whole():
    rng = np.random.default_rng(0)
    byte_nats = rng.uniform(0, 3, 1000)
    repeated = rng.random(1000) < 0.3
    parts = split_bpb(byte_nats, repeated)
    assert parts["all"] == pytest.approx(byte_nats.sum() / math.log(2) / 1000)
    share = parts["share"]
    assert parts["all"] == pytest.approx(share * parts["repeated"] + (1 - share) * parts["other"])
    with pytest.raises(ValueError, match="scored bytes but a mask"):
        split_bpb(byte_nats, repeated[:-1])
