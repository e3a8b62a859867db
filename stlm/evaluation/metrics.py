"""Metrics for text-to-text tasks: ROUGE, exact match and token F1, accuracy.

Every function takes predictions and references as parallel lists of strings
and returns a score in [0, 1] averaged over examples (corpus scores are the
mean of per-example scores, as the SQuAD and rouge-score conventions have it).

- ROUGE-1/2/L F-measure from the `rouge-score` package (Google's
  reimplementation of ROUGE-1.5.5; lowercased, Porter-stemmed, non-alphanumeric
  characters dropped). `evaluate.load("rouge")` wraps the same package but
  needs the Hub, so it is not used.
- Exact match and token F1 after SQuAD's normalisation: lowercase, drop
  punctuation, drop the articles a/an/the, collapse whitespace.
- Accuracy: the prediction, stripped of surrounding whitespace, equals the
  reference.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def rouge(predictions: Sequence[str], references: Sequence[str], *, stemmer: bool = True) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures ({"rouge1": ..., "rouge2": ..., "rougeL": ...})."""
    _check_parallel(predictions, references)
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        from stlm.errors import UserError

        raise UserError("ROUGE needs the rouge-score package: pip install rouge-score") from None
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=stemmer)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for pred, ref in zip(predictions, references):
        # rouge-score's argument order is (target, prediction).
        scores = scorer.score(ref, pred)
        for key in ROUGE_KEYS:
            totals[key] += scores[key].fmeasure
    n = max(1, len(predictions))
    return {key: total / n for key, total in totals.items()}


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference after `normalize_answer`."""
    _check_parallel(predictions, references)
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references))
    return hits / max(1, len(predictions))


def token_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean F1 of the normalised tokens shared by prediction and reference (a multiset overlap)."""
    _check_parallel(predictions, references)
    return sum(_f1(p, r) for p, r in zip(predictions, references)) / max(1, len(predictions))


def _f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        # Both empty is a match (SQuAD's rule for unanswerable questions); one empty is a miss.
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions that equal their reference once surrounding whitespace is stripped."""
    _check_parallel(predictions, references)
    hits = sum(p.strip() == r.strip() for p, r in zip(predictions, references))
    return hits / max(1, len(predictions))


def _check_parallel(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
