from __future__ import annotations

import pytest

from stlm.data import split_documents
from stlm.data.split import MIN_DOCUMENTS, cut_into_pieces
from stlm.errors import UserError


def _docs(n: int, tag: str = "doc") -> list[str]:
    return [f"{tag} number {i}: some words about it\n" for i in range(n)]


def test_split_is_deterministic_disjoint_and_complete() -> None:
    docs = _docs(500)
    train, val = split_documents(docs, val_fraction=0.1, seed=3)
    assert (train, val) == split_documents(list(docs), val_fraction=0.1, seed=3)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(docs)
    assert train == [d for d in docs if d in set(train)]  # corpus order is kept
    assert 25 <= len(val) <= 80  # about 10% of 500
    assert split_documents(docs, val_fraction=0.1, seed=4) != (train, val)


def test_adding_documents_never_moves_existing_ones() -> None:
    docs = _docs(200)
    train, val = split_documents(docs, seed=0)
    more_train, more_val = split_documents(_docs(300, tag="new") + docs, seed=0)
    assert set(train) <= set(more_train)
    assert set(val) <= set(more_val)


def test_both_sides_non_empty_even_at_extreme_fractions() -> None:
    for fraction in (0.001, 0.999):
        train, val = split_documents(_docs(MIN_DOCUMENTS), val_fraction=fraction)
        assert train and val
    train, val = split_documents(["one\n", "two\n"], val_fraction=0.05)
    assert len(train) == len(val) == 1


def test_few_big_documents_are_cut_at_line_breaks() -> None:
    big = "".join(f"line {i} of the only document, with some padding text\n" for i in range(20000))
    pieces = cut_into_pieces([big])
    assert "".join(pieces) == big
    assert all(p.endswith("\n") for p in pieces)
    assert len(pieces) == pytest.approx(len(big) / (64 * 1024), abs=1)
    train, val = split_documents([big])
    assert train and val
    assert sorted(train + val) == sorted(pieces)


def test_cuts_keep_multibyte_characters_whole() -> None:
    doc = "é€😀 line\n" * 5000
    pieces = cut_into_pieces([doc], piece_bytes=1000)
    assert "".join(pieces) == doc and len(pieces) > 10


def test_unsplittable_corpus_is_a_user_error() -> None:
    with pytest.raises(UserError, match="cannot be split"):
        split_documents(["a single short document"])
    with pytest.raises(UserError, match="cannot be split"):
        split_documents(["x" * 200_000])  # one line: no place to cut


def test_bad_fraction_is_a_user_error() -> None:
    for fraction in (0.0, 1.0, -0.5):
        with pytest.raises(UserError, match="val_fraction"):
            split_documents(_docs(30), val_fraction=fraction)
