"""The bag-of-words baseline: naive Bayes computed by hand on a toy set, smoothing chosen on validation."""

from __future__ import annotations

import math

from stlm.finetune.bow import NaiveBayes, features, fit_bag_of_words
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
