"""The loaders on the real evaluation files in ../shared/data (skipped only when that folder is absent)."""

from __future__ import annotations

import json

import pytest

from stlm.evaluation.blimp import N_PHENOMENA, load_blimp
from stlm.evaluation.multiple_choice import load_piqa
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"evaluation data folder {SHARED_DATA} is absent (it lives beside the repo as ../shared/data)",
)


def test_blimp_has_67_phenomena_of_1000_distinct_pairs():
    phenomena = load_blimp(SHARED_DATA / "blimp")
    assert len(phenomena) == N_PHENOMENA
    assert all(len(p.pairs) == 1000 for p in phenomena)
    # The release has 7 pairs whose two sentences are identical (passive_1: 2, principle_A_case_2: 5);
    # they tie, and a tie counts as wrong, as in lm-eval.
    assert sum(good == bad for p in phenomena for good, bad in p.pairs) == 7
    assert {p.field for p in phenomena} <= {"morphology", "syntax", "semantics", "syntax_semantics", "syntax/semantics"}
    first = json.loads((SHARED_DATA / "blimp" / "adjunct_island.jsonl").read_text(encoding="utf-8").splitlines()[0])
    island = next(p for p in phenomena if p.uid == "adjunct_island")
    assert island.pairs[0] == (first["sentence_good"], first["sentence_bad"])
    assert [len(p.pairs) for p in load_blimp(SHARED_DATA / "blimp", limit=3)] == [3] * N_PHENOMENA


def test_piqa_has_1838_two_way_items_with_gold_labels():
    items = load_piqa(SHARED_DATA / "piqa")
    assert len(items) == 1838
    assert all(len(it.choices) == 2 and it.gold in (0, 1) for it in items)
    assert all(it.context.startswith("Question: ") and it.context.endswith("\nAnswer:") for it in items)
    labels = (SHARED_DATA / "piqa" / "valid-labels.lst").read_text(encoding="utf-8").split()
    assert [it.gold for it in items] == [int(x) for x in labels]
    assert 0.3 < sum(it.gold for it in items) / len(items) < 0.7  # both answers occur, roughly balanced


def test_wikitext2_files_are_utf8_text():
    for name in ("valid.txt", "test.txt"):
        text = (SHARED_DATA / "wikitext-2" / name).read_text(encoding="utf-8")
        assert len(text) > 100_000 and "<unk>" in text
