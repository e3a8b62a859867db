"""A bag-of-words classifier: the baseline a fine-tuned classifier must beat to mean anything.

Multinomial naive Bayes over word unigrams and bigrams (lowercased runs of
letters, digits and underscores), with add-alpha smoothing; alpha is chosen
from `ALPHAS` by accuracy on the validation examples when there are any
(ties: the smallest), else 1. It sees exactly the split the model sees, so
"the model beats bag of words" compares like with like. Pure Python: no
scikit-learn needed, and deterministic (ties between labels go to the first
label in sorted order).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from stlm.finetune.examples import Example

ALPHAS = (0.03, 0.1, 0.3, 1.0)
_WORD = re.compile(r"[a-z0-9_]+")


def features(text: str) -> Counter[str]:
    """Word unigrams and bigrams ("a b") of `text`, with counts."""
    words = _WORD.findall(text.lower())
    return Counter(words + [f"{a} {b}" for a, b in zip(words, words[1:])])


@dataclass
class NaiveBayes:
    labels: list[str]
    log_prior: dict[str, float]
    counts: dict[str, Counter[str]]  # label -> feature counts over its training examples
    totals: dict[str, int]
    vocab_size: int
    alpha: float = 1.0

    @classmethod
    def fit(cls, examples: Sequence[Example], alpha: float = 1.0) -> NaiveBayes:
        labels = sorted({ex.target.strip() for ex in examples})
        counts: dict[str, Counter[str]] = {label: Counter() for label in labels}
        docs = Counter(ex.target.strip() for ex in examples)
        for ex in examples:
            counts[ex.target.strip()].update(features(ex.input))
        vocab = set().union(*counts.values()) if counts else set()
        return cls(
            labels=labels,
            log_prior={label: math.log(docs[label] / len(examples)) for label in labels},
            counts=counts,
            totals={label: sum(c.values()) for label, c in counts.items()},
            vocab_size=len(vocab),
            alpha=alpha,
        )

    def predict(self, text: str) -> str:
        feats = features(text)

        def score(label: str) -> float:
            denominator = math.log(self.totals[label] + self.alpha * (self.vocab_size + 1))
            counts = self.counts[label]
            return self.log_prior[label] + sum(
                n * (math.log(counts[f] + self.alpha) - denominator) for f, n in feats.items()
            )

        return max(self.labels, key=lambda label: (score(label), -self.labels.index(label)))


def fit_bag_of_words(train: Sequence[Example], val: Sequence[Example] = ()) -> NaiveBayes:
    """Naive Bayes on `train`, its smoothing chosen on `val` (see the module docstring)."""
    if not val:
        return NaiveBayes.fit(train)
    model = NaiveBayes.fit(train)
    best_alpha, best_right = 1.0, -1
    for alpha in ALPHAS:
        model.alpha = alpha
        right = sum(model.predict(ex.input) == ex.target.strip() for ex in val)
        if right > best_right:
            best_alpha, best_right = alpha, right
    model.alpha = best_alpha
    return model
