"""Labelling texts with fine-tuned classifiers: each label's probability, from one run or several.

    RUN (its best checkpoint) -> label scores, as fine-tuning's evaluation computes them
                                 direct:  log p(label + EOS | input)
                                 channel: log p(input + EOS | label) + log p(label)
                              -> log-softmax over the labels: log p(label | input)
    several runs              -> the mean of their log-posteriors, renormalised (a geometric mean;
                                 weighted when weights are given)
    windows (optional)        -> a text longer than a run reads, scored window by window of that
                                 size; the run's posterior is the renormalised mean of theirs

Bag of words can be one of the members: naive Bayes fitted on a labelled
training file, its smoothing and its temperature chosen on a validation file
(the temperature by log-loss: naive Bayes alone is far too sure of itself to
average with). It reads words, where the runs read bytes, so the two are
wrong on different texts. Its weight in the average is an equal share unless
given (the runs share the rest equally).

A channel run needs its label prior, log p(label) from its training labels.
No checkpoint names a path stlm reads, so the prior is the one the run
records, or it is counted again from the run folder's own data/ (a built-in
task's examples, or files put there), only when they are the examples the run
recorded (its fingerprint). Otherwise the run is refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stlm import checkpoint as ckpt_io
from stlm.config import RuntimeConfig
from stlm.errors import UserError
from stlm.evaluation.jsonl import read_jsonl
from stlm.finetune.bow import NaiveBayes, fit_bag_of_words, fit_temperature
from stlm.finetune.config import FinetuneConfig
from stlm.finetune.evaluate import channel_scores, direct_scores, label_log_prior, label_score_rows, prior_or_uniform
from stlm.finetune.examples import Example, load_examples
from stlm.finetune.format import TextToText, utf8_windows
from stlm.finetune.loop import BEST, TaskData, examples_fingerprint
from stlm.finetune.spin import starting_checkpoint
from stlm.runtime import Runtime, resolve_runtime

SPLITS = ("train", "val", "test")


@dataclass
class Classifier:
    """A fine-tuned classification checkpoint, loaded, with what scoring its labels needs."""

    path: Path  # the checkpoint folder
    model: torch.nn.Module  # in eval mode on runtime.device
    fmt: TextToText  # the view the run was trained and evaluated with (channel: reads the label)
    labels: list[str]  # in the run's order
    direction: str  # direct | channel
    prior: list[float]  # channel: log p(label) in `labels` order; direct: empty
    runtime: Runtime

    @property
    def input_bytes(self) -> int:
        """How many UTF-8 bytes of a text the run reads (direct) or scores (channel); the rest is cut."""
        return self.fmt.max_input_bytes if self.direction == "direct" else self.fmt.max_target_bytes


@dataclass
class BagOfWords:
    """Naive Bayes as a classifier member: fitted on `path`, smoothing and temperature from validation."""

    path: Path  # the training file
    model: NaiveBayes
    temperature: float

    @property
    def labels(self) -> list[str]:
        return self.model.labels


Member = Classifier | BagOfWords


def fit_bag_of_words_member(train: str | Path, val: str | Path) -> BagOfWords:
    """Naive Bayes on a labelled JSONL/CSV file (fields input, target), alpha and temperature chosen on `val`."""
    fields = dict(input_field="input", target_field="target")
    train_examples, val_examples = load_examples(train, **fields), load_examples(val, **fields)
    model = fit_bag_of_words(train_examples, val_examples)
    unknown = sorted({ex.target.strip() for ex in val_examples} - set(model.labels))
    if unknown:
        raise UserError(f"{val} has labels the training file {train} never gives: {', '.join(unknown)}")
    return BagOfWords(Path(train), model, fit_temperature(model, val_examples))


def load_classifier(
    path: str | Path, *, device: str = "auto", threads: int | None = None, precision: str = "auto"
) -> Classifier:
    """A run folder of `stlm finetune` on a classification task (its best checkpoint) or one of its checkpoints."""
    ckpt = starting_checkpoint(str(path))
    record = ckpt_io.read_record(ckpt / "config.json")
    saved, task = record.sections.get("finetune"), record.sections.get("task")
    if not isinstance(saved, dict) or not isinstance(task, dict):
        raise UserError(f"{path} is not a fine-tuned run (it records no task); classify takes runs of stlm finetune")
    kind, labels = task.get("kind"), task.get("labels")
    if kind != "classification" or not isinstance(labels, list) or not labels:
        raise UserError(f"{path} was fine-tuned on a {kind} task, not classification; it has no labels to score")
    if not all(isinstance(label, str) and label for label in labels) or len(set(labels)) != len(labels):
        raise UserError(f"{ckpt}/config.json: the label set must be distinct non-empty strings, got {labels!r}")
    cfg = FinetuneConfig.from_dict(saved, source=f"{ckpt}/config.json").task
    direction = cfg.direction
    prior = _channel_prior(Path(path), ckpt, task, labels) if direction == "channel" else []
    runtime_cfg = RuntimeConfig(device=device, threads=threads or 0, precision=precision)
    runtime = resolve_runtime(runtime_cfg, purpose="generate")  # as `stlm.load` resolves it, after the checks
    loaded = ckpt_io.load(ckpt, runtime.device)
    read_bytes, write_bytes = cfg.max_input_bytes, cfg.max_target_bytes
    if direction == "channel":  # as fine-tuning built it: the model reads the label and writes the input
        read_bytes, write_bytes = write_bytes, read_bytes
    max_len = loaded.family.max_len(loaded.model_config)
    fmt = TextToText(loaded.family, loaded.tokenizer, cfg.separator, read_bytes, write_bytes, max_len)
    return Classifier(ckpt, loaded.model, fmt, list(labels), direction, prior, runtime)


def _channel_prior(given: Path, ckpt: Path, task: dict[str, Any], labels: list[str]) -> list[float]:
    """log p(label) of a channel run: recorded in its config, or counted from the run folder's data/
    when those files hold exactly the examples the run recorded (its fingerprint)."""
    recorded = task.get("label_prior")
    if recorded is not None:
        ok = isinstance(recorded, list) and len(recorded) == len(labels)
        if not ok or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in recorded):
            raise UserError(f"{ckpt}/config.json: label_prior must be {len(labels)} finite numbers")
        return [float(v) for v in recorded]
    for data in _data_folders(given, ckpt):
        if not (data / "train.jsonl").is_file():
            continue
        splits = {
            s: load_examples(data / f"{s}.jsonl", input_field="input", target_field="target")
            if (data / f"{s}.jsonl").is_file()
            else []
            for s in SPLITS
        }
        found = TaskData("classification", splits["train"], splits["val"], splits["test"], labels, {})
        if examples_fingerprint(found) == task.get("fingerprint"):
            return label_log_prior(splits["train"], labels)
        raise UserError(
            f"{data} holds other examples than the ones {given} was fine-tuned on; "
            "a channel run's label prior is counted from its own training examples"
        )
    raise UserError(
        f"{given} is a channel classifier and records no label prior, and its folder holds no data/ "
        "with its training examples (it was fine-tuned on your own files); "
        "put its examples there (data/train.jsonl, val.jsonl, test.jsonl with input and target), or use a direct run"
    )


def _data_folders(given: Path, ckpt: Path) -> list[Path]:
    """Where a run's data/ may be, found from the path the user gave (never a path a checkpoint names)."""
    places = [given] if not ckpt_io.is_checkpoint(given) else []
    run = ckpt_io.run_of(ckpt)
    if run is not None:
        places.append(run)
        if run.name == BEST:  # RUN/best/checkpoints/step-N: the fine-tuning run is RUN
            places.append(run.parent)
    return list(dict.fromkeys(p / "data" for p in places))


def label_log_posteriors(
    classifier: Member,
    texts: Sequence[str],
    *,
    windows: bool = False,
    batch_size: int = 16,
    progress: bool = False,
) -> list[list[float]]:
    """Per text, log p(label | text) in the classifier's label order: the log-softmax of the label
    scores fine-tuning's evaluation maximises (direct: log p(label + EOS | text); channel:
    log p(text + EOS | label) + log p(label)); bag of words: its tempered posterior.

    A run reads the first `input_bytes` of a text, as it was fine-tuned. With `windows`, a longer
    text is read as consecutive windows of that size, and its posterior is the renormalised mean
    of theirs (log space), so every byte counts. Bag of words always reads the whole text."""
    c = classifier
    if isinstance(c, BagOfWords):
        return [c.model.log_posteriors(text, c.temperature) for text in texts]
    if windows:
        pieces = [utf8_windows(text, c.input_bytes) for text in texts]
        flat = [piece for text_pieces in pieces for piece in text_pieces]
        posts = torch.tensor(
            label_log_posteriors(c, flat, batch_size=batch_size, progress=progress), dtype=torch.float64
        ).reshape(len(flat), len(c.labels))
        per_text = posts.split([len(text_pieces) for text_pieces in pieces])
        return [p.mean(dim=0).log_softmax(dim=-1).tolist() for p in per_text]
    examples = [Example(text, "") for text in texts]
    scoring = dict(batch_size=batch_size, device=c.runtime.device, autocast=c.runtime.autocast(), progress=progress)
    if c.direction == "channel":
        rows = channel_scores(c.model, c.fmt, examples, c.labels, **scoring)
        scores = label_score_rows(rows, prior_or_uniform(c.prior, c.labels))
    else:
        scores = label_score_rows(direct_scores(c.model, c.fmt, examples, c.labels, **scoring))
    if not scores:
        return []
    return torch.tensor(scores, dtype=torch.float64).log_softmax(dim=-1).tolist()


def check_same_labels(classifiers: Sequence[Member]) -> list[str]:
    """The first classifier's labels, when every classifier has the same set (in any order)."""
    first = classifiers[0]
    for c in classifiers[1:]:
        if set(c.labels) != set(first.labels):
            raise UserError(
                f"{c.path} has the labels ({', '.join(c.labels)}) and {first.path} has ({', '.join(first.labels)}); "
                "models averaged must share one label set"
            )
    return list(first.labels)


def classify_texts(
    classifiers: Sequence[Member],
    texts: Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    windows: bool = False,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[list[str], list[list[float]]]:
    """(labels, per text each label's probability in that order): the classifiers' posteriors
    averaged in log space (`weights`, summing to 1; default equal) and renormalised (one
    classifier: its own posterior). `windows`: runs read long texts window by window
    (`label_log_posteriors`)."""
    if not classifiers:
        raise ValueError("classify_texts needs at least one classifier")
    if weights is None:
        weights = [1.0 / len(classifiers)] * len(classifiers)
    if len(weights) != len(classifiers) or any(w < 0 for w in weights) or not math.isclose(sum(weights), 1.0):
        raise ValueError(f"weights must be {len(classifiers)} non-negative numbers summing to 1, got {weights}")
    labels = check_same_labels(classifiers)
    if any(
        isinstance(c, Classifier) and c.direction == "channel" for c in classifiers
    ):  # the input is what a channel model scores
        for i, text in enumerate(texts):
            if not text.strip():
                raise UserError(f"text {i + 1} is empty; a channel classifier scores the input")
    total = torch.zeros(len(texts), len(labels), dtype=torch.float64)
    for c, weight in zip(classifiers, weights, strict=True):
        order = [c.labels.index(label) for label in labels]
        posts = label_log_posteriors(c, texts, windows=windows, batch_size=batch_size, progress=progress)
        if posts:
            total += weight * torch.tensor(posts, dtype=torch.float64)[:, order]
    mean = total.log_softmax(dim=-1)
    return labels, mean.exp().tolist()


def read_texts(path: str | Path, field: str = "input") -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(rows, texts, where) of a JSONL file: each object, its string `field`, and its "path:line"."""
    rows, texts, where = [], [], []
    for line, row in read_jsonl(Path(path), (field,), what="input"):
        if not isinstance(row[field], str):
            raise UserError(f"{path}:{line}: field {field!r} must be a string, got {type(row[field]).__name__}")
        rows.append(row)
        texts.append(row[field])
        where.append(f"{path}:{line}")
    return rows, texts, where


def labelled_rows(
    rows: Sequence[dict[str, Any]], labels: Sequence[str], probs: Sequence[Sequence[float]]
) -> list[dict[str, Any]]:
    """Each row with "probs" ({label: probability}) and "label" (the most probable; the first of equals)."""
    out = []
    for row, p in zip(rows, probs, strict=True):
        best = max(range(len(labels)), key=p.__getitem__)
        out.append({**row, "probs": dict(zip(labels, p)), "label": labels[best]})
    return out


def write_jsonl_atomic(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows as JSONL, written beside `path`, fsynced and renamed over it: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, no permission: one line, and an earlier file is left as it was
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
