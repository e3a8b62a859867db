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

Two statistics say how far an accuracy can be trusted: the Wilson score
interval of a share (better than the normal approximation near 0 and 1 and on
small test sets), and McNemar's exact test for two classifiers scored on the
same examples (only the examples where exactly one is right carry evidence;
under "equally good" each is a fair coin toss).
"""

from __future__ import annotations

import math
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


def wilson_interval(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of the share hits / n (z = 1.96: 95%); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    share = hits / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    # at 0 and n the bound is exactly 0 or 1; say so rather than leave it to rounding
    return (0.0 if hits == 0 else centre - half), (1.0 if hits == n else centre + half)


def mcnemar_exact(a_right: Sequence[bool], b_right: Sequence[bool]) -> tuple[int, int, float]:
    """McNemar's exact test of two classifiers on the same examples: (examples only a gets right,
    examples only b gets right, two-sided p-value). Under the hypothesis that both are equally
    good, each disagreement is a fair coin toss; p is the chance of a split at least this uneven."""
    if len(a_right) != len(b_right):
        raise ValueError(f"{len(a_right)} results for a, {len(b_right)} for b")
    a_only = sum(a and not b for a, b in zip(a_right, b_right))
    b_only = sum(b and not a for a, b in zip(a_right, b_right))
    n = a_only + b_only
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2**n
    return a_only, b_only, min(1.0, 2 * tail)


def _check_parallel(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
