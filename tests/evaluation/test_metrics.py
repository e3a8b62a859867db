"""Metrics against hand-computed cases."""

from __future__ import annotations

import pytest
from scipy import stats  # the reference for the interval and the paired test

from stlm.evaluation.metrics import (
    accuracy,
    exact_match,
    mcnemar_exact,
    normalize_answer,
    rouge,
    token_f1,
    wilson_interval,
)


def test_normalize_answer_lowercases_and_drops_punctuation_articles_and_extra_space():
    assert normalize_answer("  The Cat, sat!  on   a mat. ") == "cat sat on mat"
    assert normalize_answer("An apple") == "apple"
    assert normalize_answer("theory") == "theory"  # "the" only as a whole word


def test_exact_match_after_normalisation():
    assert exact_match(["the cat", "Paris!", "dog"], ["Cat", "paris", "cat"]) == pytest.approx(2 / 3)


def test_token_f1_hand_cases():
    # pred {cat, sat, on, mat} vs ref {cat, sat}: P = 2/4, R = 2/2 -> F1 = 2/3
    assert token_f1(["cat sat on mat"], ["the cat sat"]) == pytest.approx(2 / 3)
    # multiset overlap: pred x y y, ref y y y z -> common 2, P = 2/3, R = 2/4 -> F1 = 4/7
    assert token_f1(["x y y"], ["y y y z"]) == pytest.approx(4 / 7)
    assert token_f1(["dog"], ["cat"]) == 0.0
    # both empty after normalisation is a match, one empty a miss
    assert token_f1(["the"], [""]) == 1.0
    assert token_f1(["cat"], ["a"]) == 0.0
    # the corpus score is the mean of example scores
    assert token_f1(["cat sat on mat", "dog"], ["the cat sat", "dog"]) == pytest.approx((2 / 3 + 1) / 2)


def test_accuracy_strips_whitespace_only():
    assert accuracy([" red\n", "Blue", "green"], ["red", "blue", "green"]) == pytest.approx(2 / 3)


def test_rouge_hand_case():
    # pred: the cat sat on the mat / ref: the cat was on a mat (6 tokens each)
    # unigrams in common: the, cat, on, mat = 4 -> P = R = 4/6
    # bigrams in common: "the cat" = 1 of 5 each -> 1/5
    # longest common subsequence: the cat on mat = 4 -> 4/6
    scores = rouge(["the cat sat on the mat"], ["the cat was on a mat"])
    assert scores["rouge1"] == pytest.approx(4 / 6)
    assert scores["rouge2"] == pytest.approx(1 / 5)
    assert scores["rougeL"] == pytest.approx(4 / 6)


def test_rouge_stems_and_averages_examples():
    scores = rouge(["cats running", "nothing alike"], ["cat runs", "cat runs"])
    assert scores["rouge1"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert rouge(["x"], ["x"], stemmer=False)["rougeL"] == 1.0


def test_metrics_need_parallel_lists():
    with pytest.raises(ValueError):
        accuracy(["a"], ["a", "b"])


@pytest.mark.parametrize("hits,n", [(0, 1), (1, 1), (0, 10), (10, 10), (3, 10), (81, 263), (299, 359), (500, 1000)])
def test_wilson_interval_equals_scipy(hits, n):
    ci = stats.binomtest(hits, n).proportion_ci(method="wilson")
    lo, hi = wilson_interval(hits, n)
    assert lo == pytest.approx(ci.low, abs=1e-7) and hi == pytest.approx(ci.high, abs=1e-7)
    assert 0.0 <= lo <= hits / n <= hi <= 1.0


def test_wilson_interval_hand_case_and_empty():
    # 81 / 263: the textbook case, (0.2553, 0.3662)
    lo, hi = wilson_interval(81, 263)
    assert round(lo, 4) == 0.2553 and round(hi, 4) == 0.3662
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    "a_only,b_only,both,neither", [(19, 29, 280, 31), (0, 5, 3, 0), (7, 7, 1, 1), (1, 0, 0, 0), (30, 2, 0, 9)]
)
def test_mcnemar_exact_counts_disagreements_and_equals_a_binomial_test(a_only, b_only, both, neither):
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    got = mcnemar_exact(a, b)
    assert got[:2] == (a_only, b_only)
    assert got[2] == pytest.approx(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue, rel=1e-12)
    assert mcnemar_exact(b, a) == (b_only, a_only, got[2])  # symmetric


def test_mcnemar_exact_without_disagreements_and_on_unequal_lists():
    assert mcnemar_exact([True, False], [True, False]) == (0, 0, 1.0)
    assert mcnemar_exact([], []) == (0, 0, 1.0)
    # 19 against 29: p = 0.193, no evidence either way
    assert round(mcnemar_exact([True] * 19 + [False] * 29, [False] * 19 + [True] * 29)[2], 3) == 0.193
    with pytest.raises(ValueError, match="3 results for a, 2 for b"):
        mcnemar_exact([True] * 3, [True] * 2)
