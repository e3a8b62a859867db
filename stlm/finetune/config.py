"""Typed fine-tuning configuration: which model, which task and data, how long, and how it is judged.

    init = "decoder-tiny"                  # a preset (random init) or a run / checkpoint directory
    dropout = 0.1                          # the model's dropout while fine-tuning (unset: its own)
    [task]
    name = "docstring-topic"               # built-in task, or "" with train_file (+ val_file, test_file)
    [optim]
    lr = 1e-3
    [train]
    steps = 500
    patience = 3                           # evaluations without improvement before stopping

Sections reuse the pretraining run config's `OptimConfig` and `RuntimeConfig`
(so every runtime option - compile, activation checkpointing, fp16 with its
gradient scaler - applies to fine-tuning through the shared training step);
the same reader checks names and types (`stlm.config.config_from_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stlm.config import DistillConfig, OptimConfig, RuntimeConfig, SectionedConfig, read_config_file
from stlm.errors import UserError
from stlm.models.config_dict import is_dropout

KINDS = ("summarization", "qa", "classification")
# Classification only: which way the model learns a (text, label) pair. direct: the label after the
# text, p(label | text); channel: the text after the label, p(text | label), and the label that
# makes the text likeliest (times its training share) wins, a generative classifier.
DIRECTIONS = ("direct", "channel")
BUILTIN_TASKS = {"docstring-summary": "summarization", "docstring-topic": "classification"}  # name -> kind
# The metric early stopping watches when train.metric is "auto"; "loss" is lower-is-better, the rest higher.
DEFAULT_METRIC = {"summarization": "rougeL", "qa": "f1", "classification": "accuracy"}


@dataclass
class TaskConfig:
    name: str = ""  # built-in task (docstring-summary | docstring-topic), or "" for your own files
    kind: str = ""  # summarization | qa | classification; "": the built-in task's own, summarization for files
    train_file: str | None = None  # .jsonl or .csv
    val_file: str | None = None  # None: split off val_fraction of train_file by a hash of each example
    test_file: str | None = None  # scored once at the end with the best checkpoint
    input_field: str = "input"  # field / column holding the input
    target_field: str = "target"  # field / column holding the target
    probs_field: str = "probs"  # classification training rows (JSONL): a soft label {label: probability}
    context_field: str | None = None  # qa: input becomes "question: <input>\ncontext: <context>"
    labels: str = ""  # classification: comma-separated label set; "" derives it from the training targets
    direction: str = "direct"  # classification: direct (label after input) | channel (input after label)
    val_fraction: float = 0.1  # without val_file: share of train_file held out for validation
    split_seed: int = 0  # seed of that split
    separator: str = "\n=> "  # decoders: text between the prompt and the target
    max_input_bytes: int = 256  # inputs are cut to this many UTF-8 bytes (whole characters)
    max_target_bytes: int = 112  # training targets are cut to this; references are never cut

    def __post_init__(self) -> None:
        _check(not self.kind or self.kind in KINDS, f"task.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        _check(
            not self.name or self.name in BUILTIN_TASKS,
            f"task.name must be one of {', '.join(BUILTIN_TASKS)} (or empty for your own files), got {self.name!r}",
        )
        _check(
            bool(self.name) != bool(self.train_file),
            "give either a built-in task (--task) or a training file (--train), not both and not neither",
        )
        _check(0.0 < self.val_fraction < 0.5, "task.val_fraction must be in (0, 0.5)")
        _check(-(2**63) <= self.split_seed < 2**63, "task.split_seed must fit in 64 bits (|seed| < 2**63)")
        _check(
            not self.labels.strip() or bool(self.label_set()),
            f"task.labels {self.labels!r} names no label; give them comma-separated, e.g. positive,negative",
        )
        _check(
            self.direction in DIRECTIONS,
            f"task.direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}",
        )
        _check(
            self.direction == "direct" or self.resolved_kind() == "classification",
            f"task.direction {self.direction!r} is for classification tasks; this task is {self.resolved_kind()}",
        )
        _check(
            self.max_input_bytes >= 1 and self.max_target_bytes >= 1,
            "task.max_input_bytes and max_target_bytes must be >= 1",
        )

    def resolved_kind(self) -> str:
        if self.name:
            return BUILTIN_TASKS[self.name]
        return self.kind or "summarization"

    def label_set(self) -> list[str]:
        return [label.strip() for label in self.labels.split(",") if label.strip()]


@dataclass
class FinetuneTrainConfig:
    steps: int = 500  # optimizer steps at most (early stopping may end sooner)
    batch_size: int = 16  # examples per step
    seed: int = 0  # init (for presets) and example order
    log_every: int = 10  # steps between training records in metrics.jsonl
    eval_every: int = 100  # validate every N steps (and at the end)
    eval_examples: int = 100  # validation examples generated for the metric at each evaluation; 0: all
    metric: str = "auto"  # what early stopping watches: auto (by task kind), loss, or a metric name
    patience: int = 3  # evaluations without improvement before stopping; 0 never stops early
    max_new_tokens: int = 0  # generation length; 0: the longest training target + 8
    keep_checkpoints: int = 1  # newest complete checkpoints kept for --resume (the best is kept apart)
    score_initial: bool = True  # also score the starting model on the final split (the "untuned" row)
    nonfinite_skips: int = 3  # consecutive steps with a NaN/inf loss or gradient skipped before the run stops
    refit: bool = False  # settings chosen on validation: train on train + val, all `steps`; test scores the last step

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "eval_every", "keep_checkpoints"):
            _check(getattr(self, name) >= 1, f"train.{name} must be >= 1")
        for name in ("eval_examples", "patience", "max_new_tokens", "nonfinite_skips"):
            _check(getattr(self, name) >= 0, f"train.{name} must be >= 0")
        _check(0 <= self.seed < 2**63, "train.seed must be in [0, 2**63)")


def _finetune_optim() -> OptimConfig:
    # Fine-tuning a small model: a lower peak and a short warmup (30 of the default 500 steps).
    return OptimConfig(lr=1e-3, warmup_fraction=0.06, weight_decay=0.0)


@dataclass
class FinetuneConfig(SectionedConfig):
    init: str = "decoder-tiny"  # a preset name (random init) or a run / checkpoint directory
    tokenizer: str = "auto"  # presets only: auto | byte | byt5 | spiece:PATH (a checkpoint keeps its own)
    dropout: float | None = None  # the model's dropout while fine-tuning (0.1 is usual); unset: the model's own
    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="docstring-topic"))
    optim: OptimConfig = field(default_factory=_finetune_optim)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        _check(
            self.dropout is None or is_dropout(self.dropout),
            f"dropout must be a number in [0, 1), got {self.dropout!r}",
        )
        _check(
            self.task.direction == "direct" or self.distill.teacher is None,
            "distillation (--teacher) teaches the direct direction; drop --teacher or --direction channel",
        )

    def metric(self) -> str:
        """The validation metric early stopping and the best checkpoint follow."""
        if self.train.metric == "auto":
            return DEFAULT_METRIC[self.task.resolved_kind()]
        return self.train.metric


def load_finetune_config(path: str | Path) -> FinetuneConfig:
    """A fine-tuning recipe (.toml or .json); errors name the file."""
    return FinetuneConfig.from_dict(read_config_file(path), source=str(path))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)
