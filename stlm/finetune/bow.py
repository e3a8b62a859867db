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
TEMPERATURES = (1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0)
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

    def log_likelihoods(self, text: str) -> list[float]:
        """log p(label) + log p(text's features | label), in `labels` order (unnormalised)."""
        feats = features(text)
        out = []
        for label in self.labels:
            denominator = math.log(self.totals[label] + self.alpha * (self.vocab_size + 1))
            counts = self.counts[label]
            out.append(
                self.log_prior[label]
                + sum(n * (math.log(counts[f] + self.alpha) - denominator) for f, n in feats.items())
            )
        return out

    def predict(self, text: str) -> str:
        scores = self.log_likelihoods(text)
        return self.labels[max(range(len(self.labels)), key=scores.__getitem__)]  # the first of equals

    def log_posteriors(self, text: str, temperature: float = 1.0) -> list[float]:
        """log p(label | text) in `labels` order, the log-likelihoods divided by `temperature` first:
        naive Bayes counts every feature as independent evidence, so its raw posteriors are far too sure."""
        return _tempered_log_softmax(self.log_likelihoods(text), temperature)


def _tempered_log_softmax(scores: Sequence[float], temperature: float) -> list[float]:
    """log softmax(scores / temperature), computed stably."""
    scaled = [v / temperature for v in scores]
    top = max(scaled)
    log_z = top + math.log(math.fsum(math.exp(v - top) for v in scaled))
    return [v - log_z for v in scaled]


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


def fit_temperature(model: NaiveBayes, val: Sequence[Example]) -> float:
    """The temperature in `TEMPERATURES` whose posteriors give `val` the least log-loss (ties: the
    smallest). The choice changes probabilities only, never which label is the most probable."""
    if not val:
        raise ValueError("fit_temperature needs validation examples")
    rows = [(model.log_likelihoods(ex.input), model.labels.index(ex.target.strip())) for ex in val]

    def log_loss(t: float) -> float:  # the likelihoods are counted once, each temperature only rescales them
        return -math.fsum(_tempered_log_softmax(scores, t)[gold] for scores, gold in rows) / len(rows)

    return min(TEMPERATURES, key=lambda t: (log_loss(t), t))
