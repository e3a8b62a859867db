"""Scoring a fine-tuned model on examples: target loss, the task metric on greedy outputs, baselines.

    summarization    rouge1, rouge2, rougeL on generated text
    qa               exact_match, f1 (SQuAD normalisation)
    classification   accuracy (the generated string equals the label) and
                     accuracy_logprob (the label + EOS with the highest
                     log-probability; it never fails to parse); baselines:
                     the majority label and bag of words (bow.py).
                     A channel classifier (direction "channel") writes no
                     label: both scores are those of its choice, the label y
                     with the highest log p(input + EOS | y) + log p(y).
                     `significance`: the accuracy's 95% interval and an
                     exact McNemar test against each baseline on the same
                     examples, so a gap can be read as real or as noise.

Every result also has `loss`, the mean cross-entropy (nats) per target token.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from stlm.evaluation import metrics
from stlm.evaluation.scoring import ContinuationScore, score_continuations
from stlm.finetune.bow import NaiveBayes, fit_bag_of_words
from stlm.finetune.examples import Example
from stlm.finetune.format import TextToText, cut_utf8


@torch.no_grad()
def target_loss(model, fmt: TextToText, examples: Sequence[Example], *, batch_size: int, device, autocast) -> float:
    """Mean cross-entropy per target token over the examples (training targets, cut as in training)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(examples), batch_size):
            tensors = fmt.batch(examples[i : i + batch_size])
            n = fmt.n_target_tokens(tensors)
            with autocast:
                loss = fmt.loss(model, *(t.to(device) for t in tensors))
            total += float(loss) * n
            count += n
    finally:
        model.train(was_training)
    return total / max(1, count)


@dataclass
class Scored:
    """Scores on a list of examples and what the model answered for each, in their order."""

    metrics: dict[str, float]
    predictions: list[str]  # greedy outputs
    chosen: list[str]  # classification: the label with the highest log-probability; else empty
    # classification: per example, each label's score in label order, the number `chosen` maximised
    # (direct: log p(label + EOS | input); channel: log p(input + EOS | label) + log p(label)); else empty
    label_scores: list[list[float]] = field(default_factory=list)


def evaluate_examples(
    model: torch.nn.Module,
    fmt: TextToText,
    examples: Sequence[Example],
    **kwargs: Any,
) -> tuple[dict[str, float], list[str]]:
    """(metrics, greedy predictions) of `model` on `examples` (keyword arguments: `score_examples`)."""
    scored = score_examples(model, fmt, examples, **kwargs)
    return scored.metrics, scored.predictions


def score_examples(
    model: torch.nn.Module,
    fmt: TextToText,
    examples: Sequence[Example],
    *,
    kind: str,
    labels: Sequence[str] = (),
    max_new_tokens: int,
    batch_size: int,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
    progress: bool = False,
    direction: str = "direct",
    label_prior: Sequence[float] = (),
    decode_autocast: contextlib.AbstractContextManager | None = None,
) -> Scored:
    """The metrics of `model` on `examples`, with each example's greedy output (and log-prob label).

    `autocast` is around the batched scoring passes (the loss, the label
    log-probs), `decode_autocast` around the greedy generation (default: `autocast`).

    direction "channel": `fmt` is the channel model's view (`as_channel`), the
    loss is on the inputs, and the answer is `classify_by_channel`'s, with
    `label_prior` (log p(label), in `labels` order; default uniform).
    """
    autocast = autocast or contextlib.nullcontext()
    if direction == "channel":
        rows = channel_scores(
            model, fmt, examples, labels, batch_size=batch_size, device=device, autocast=autocast, progress=progress
        )
        label_scores = label_score_rows(rows, prior_or_uniform(label_prior, labels))
        chosen = _argmax_labels(label_scores, labels)
        accuracy = metrics.accuracy(chosen, [ex.target for ex in examples])
        # The loss is the channel model's own: nats per input unit under the true label, a row already scored.
        truth = [row[list(labels).index(ex.target.strip())] for row, ex in zip(rows, examples)]
        loss = -sum(s.logprob for s in truth) / max(1, sum(s.n_units for s in truth))
        scores = {"loss": loss, "examples": len(examples), "accuracy": accuracy, "accuracy_logprob": accuracy}
        return Scored(scores, list(chosen), chosen, label_scores)
    result: dict[str, float] = {
        "loss": target_loss(model, fmt, examples, batch_size=batch_size, device=device, autocast=autocast),
        "examples": len(examples),
    }
    with decode_autocast or autocast:
        predictions = generate_predictions(
            model, fmt, examples, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
        )
    references = [ex.target for ex in examples]
    result.update(task_metrics(kind, predictions, references))
    chosen: list[str] = []
    label_scores: list[list[float]] = []
    if kind == "classification" and labels:
        rows = direct_scores(model, fmt, examples, labels, batch_size=batch_size, device=device, autocast=autocast)
        label_scores = label_score_rows(rows)
        chosen = _argmax_labels(label_scores, labels)
        result["accuracy_logprob"] = metrics.accuracy(chosen, references)
    return Scored(result, predictions, chosen, label_scores)


def generate_predictions(
    model: torch.nn.Module,
    fmt: TextToText,
    examples: Sequence[Example],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: bool = False,
) -> list[str]:
    """Greedy outputs for the examples, in their order, generated `batch_size` at a time.

    Batches group prompts of similar length (longest first), so little of a
    batch is padding; each output is what `fmt.generate` gives its example alone.
    """
    prompts = [fmt.prompt_ids(ex.input) for ex in examples]  # tokenized once: for sorting and generating
    order = sorted(range(len(examples)), key=lambda i: -len(prompts[i]))
    predictions = [""] * len(examples)
    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(examples), desc="generating", unit="ex", leave=False)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for i, text in zip(chunk, fmt.generate_many(model, [prompts[i] for i in chunk], max_new_tokens)):
                predictions[i] = text
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return predictions


def task_metrics(kind: str, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    if kind == "summarization":
        return metrics.rouge(predictions, references)
    if kind == "qa":
        return {
            "exact_match": metrics.exact_match(predictions, references),
            "f1": metrics.token_f1(predictions, references),
        }
    return {"accuracy": metrics.accuracy(predictions, references)}


def classify_by_logprob(
    model, fmt: TextToText, examples: Sequence[Example], labels: Sequence[str], *, batch_size: int, device, autocast
) -> list[str]:
    """For each example, the label whose text + EOS the model finds most likely after the prompt."""
    rows = direct_scores(model, fmt, examples, labels, batch_size=batch_size, device=device, autocast=autocast)
    return _argmax_labels(label_score_rows(rows), labels)


def direct_scores(
    model, fmt: TextToText, examples: Sequence[Example], labels: Sequence[str], **scoring: Any
) -> list[list[ContinuationScore]]:
    """Per example, per label: log p(label + EOS | prompt) (keyword arguments: `_label_rows`)."""
    requests = [(fmt.context(ex.input), label) for ex in examples for label in labels]
    return _label_rows(model, fmt, requests, len(labels), **scoring)


def classify_by_channel(
    model,
    fmt: TextToText,
    examples: Sequence[Example],
    labels: Sequence[str],
    label_prior: Sequence[float] = (),
    *,
    batch_size: int,
    device,
    autocast,
    progress: bool = False,
) -> list[str]:
    """For each example, the label y with the highest log p(input + EOS | y) + log p(y)."""
    prior = prior_or_uniform(label_prior, labels)
    rows = channel_scores(
        model, fmt, examples, labels, batch_size=batch_size, device=device, autocast=autocast, progress=progress
    )
    return _argmax_labels(label_score_rows(rows, prior), labels)


def channel_scores(
    model, fmt: TextToText, examples: Sequence[Example], labels: Sequence[str], **scoring: Any
) -> list[list[ContinuationScore]]:
    """Per example, per label: log p(input + EOS | label) (keyword arguments: `_label_rows`).

    `fmt` is a channel model's view: its context is the label, its target the
    input (cut to `fmt.max_target_bytes`, as in training). Every label scores
    the same input, so no length normalisation is needed.
    """
    requests = [(fmt.context(label), cut_utf8(ex.input, fmt.max_target_bytes)) for ex in examples for label in labels]
    return _label_rows(model, fmt, requests, len(labels), **scoring)


def _label_rows(
    model, fmt: TextToText, requests, n_labels: int, *, batch_size: int, device, autocast, progress: bool = False
) -> list[list[ContinuationScore]]:
    """Scores of requests that come n_labels to an example (each continuation followed by EOS), one row each."""
    scores = score_continuations(
        model,
        fmt.tokenizer,
        fmt.family,
        requests,
        batch_size=batch_size * 2,
        device=device,
        autocast=autocast,
        eos=True,
        max_len=fmt.max_len,
        progress=progress,
    )
    return [scores[i : i + n_labels] for i in range(0, len(scores), n_labels)]


def label_score_rows(rows: list[list[ContinuationScore]], bonus: Sequence[float] = ()) -> list[list[float]]:
    """Per row, each label's log-probability plus its bonus (none: the log-probabilities)."""
    return [[s.logprob + b for s, b in zip(row, bonus or [0.0] * len(row))] for row in rows]


def _argmax_labels(scores: list[list[float]], labels: Sequence[str]) -> list[str]:
    """Per row of label scores, the label scored highest (the first of equals)."""
    return [labels[max(range(len(labels)), key=row.__getitem__)] for row in scores]


def prior_or_uniform(label_prior: Sequence[float], labels: Sequence[str]) -> list[float]:
    """The label prior in `labels` order; uniform (zeros) when none is given."""
    prior = list(label_prior) or [0.0] * len(labels)
    if len(prior) != len(labels):
        raise ValueError(f"label_prior has {len(prior)} values for {len(labels)} labels")
    return prior


def label_log_prior(train: Sequence[Example], labels: Sequence[str]) -> list[float]:
    """log p(label) from the training labels, add-one smoothed (a label with no example keeps a chance)."""
    counts = Counter(ex.target.strip() for ex in train)
    total = sum(counts[label] for label in labels) + len(labels)
    return [math.log((counts[label] + 1) / total) for label in labels]


def baselines(
    kind: str, train: Sequence[Example], test: Sequence[Example], val: Sequence[Example] = (), *, refit: bool = False
) -> dict[str, dict[str, Any]]:
    """Scores a model must beat: the majority training label and a bag-of-words classifier
    (classification), the lead sentence (summaries). Classification baselines keep their
    per-example predictions under "predictions". With `refit` the model trained on `train` and
    `val` together, and so do the baselines, with the smoothing bag of words chose on `val`."""
    from stlm.finetune.pydocs_tasks import lead_sentence

    references = [ex.target for ex in test]
    if kind == "classification":
        bow = fit_bag_of_words(train, val)
        how = f"alpha {bow.alpha}" + (" (chosen on validation)" if val else "")
        if refit:
            train = [*train, *val]
            bow, how = NaiveBayes.fit(train, alpha=bow.alpha), f"{how}, refit on train + validation"
        majority = Counter(ex.target.strip() for ex in train).most_common(1)[0][0]
        guessed = [bow.predict(ex.input) for ex in test]
        return {
            "majority": {"label": majority, "accuracy": metrics.accuracy([majority] * len(test), references)},
            "bag_of_words": {
                "accuracy": metrics.accuracy(guessed, references),
                "model": f"multinomial naive Bayes, word 1+2-grams, {how}",
                "predictions": guessed,
            },
        }
    if kind == "summarization":
        return {"lead_sentence": metrics.rouge([lead_sentence(ex.input) for ex in test], references)}
    return {}


def significance(
    predictions: Sequence[str], test: Sequence[Example], base: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """How far the accuracy of `predictions` on `test` can be trusted: its 95% Wilson interval, and
    for each baseline with per-example predictions, McNemar's exact test on the same examples."""

    def right(answers: Sequence[str]) -> list[bool]:
        return [a.strip() == ex.target.strip() for a, ex in zip(answers, test, strict=True)]

    ours = right(predictions)
    lo, hi = metrics.wilson_interval(sum(ours), len(ours))
    against = {}
    for name, b in base.items():
        if "predictions" in b:
            model_only, baseline_only, p_value = metrics.mcnemar_exact(ours, right(b["predictions"]))
            against[name] = {"model_only_right": model_only, "baseline_only_right": baseline_only, "p_value": p_value}
    return {"accuracy_ci95": [lo, hi], "against": against}
