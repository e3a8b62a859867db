"""The bag-of-words baseline: naive Bayes computed by hand on a toy set, smoothing chosen on validation."""

from __future__ import annotations

import math

import pytest

from stlm.finetune.bow import TEMPERATURES, NaiveBayes, features, fit_bag_of_words, fit_temperature
from stlm.finetune.evaluate import baselines
from stlm.finetune.examples import Example

TRAIN = [Example("good film", "pos"), Example("good good", "pos"), Example("bad film", "neg")]


def test_features_are_lowercased_unigrams_and_bigrams():
    assert features("Good, good film!") == {"good": 2, "film": 1, "good good": 1, "good film": 1}


def test_naive_bayes_matches_a_hand_computation():
    nb = NaiveBayes.fit(TRAIN, alpha=1.0)
    # pos counts: good 3, film 1, "good film" 1, "good good" 1 -> 6 tokens; neg: bad, film, "bad film" -> 3.
    assert nb.totals == {"pos": 6, "neg": 3} and nb.vocab_size == 6
    feats = {"bad": 1, "good": 1, "bad good": 1}

    def by_hand(label: str, prior: float) -> float:
        counts = nb.counts[label]
        return math.log(prior) + sum(n * math.log((counts[f] + 1) / (nb.totals[label] + 7)) for f, n in feats.items())

    pos, neg = by_hand("pos", 2 / 3), by_hand("neg", 1 / 3)
    assert nb.predict("bad good") == ("pos" if pos > neg else "neg")
    assert nb.predict("a bad film") == "neg" and nb.predict("good") == "pos"


def test_smoothing_is_chosen_on_validation_and_baselines_report_it():
    val = [Example("bad", "neg"), Example("good film", "pos")]
    assert fit_bag_of_words(TRAIN, val).alpha == 0.03  # every alpha is right on val: the smallest wins
    scores = baselines("classification", TRAIN, val, val)
    assert scores["bag_of_words"]["accuracy"] == 1.0 and scores["bag_of_words"]["predictions"] == ["neg", "pos"]
    assert scores["majority"] == {"label": "pos", "accuracy": 0.5}


def test_posteriors_are_the_tempered_softmax_of_the_log_likelihoods():
    nb = NaiveBayes.fit(TRAIN, alpha=0.3)
    for text in ("bad good", "a bad film", "good", "nothing known"):
        raw = nb.log_likelihoods(text)
        assert nb.labels[raw.index(max(raw))] == nb.predict(text)
        for t in (1.0, 4.0):
            got = nb.log_posteriors(text, t)
            z = math.log(math.fsum(math.exp(v / t) for v in raw))
            assert got == [pytest.approx(v / t - z, abs=1e-12) for v in raw]
            assert math.fsum(math.exp(v) for v in got) == pytest.approx(1.0, abs=1e-12)


def test_temperature_is_chosen_by_validation_log_loss():
    nb = NaiveBayes.fit(TRAIN, alpha=0.3)
    right = [Example("bad film", "neg"), Example("good good", "pos")]
    assert fit_temperature(nb, right) == 1.0  # all right and sure: the sharpest loses least
    wrong = right + [Example("good film good film bad", "neg")]  # sure and wrong: a softer model loses less

    def log_loss(t: float) -> float:
        return -sum(nb.log_posteriors(ex.input, t)[nb.labels.index(ex.target)] for ex in wrong) / len(wrong)

    chosen = fit_temperature(nb, wrong)
    assert chosen > 1.0 and log_loss(chosen) == min(log_loss(t) for t in TEMPERATURES)
    with pytest.raises(ValueError):
        fit_temperature(nb, [])
