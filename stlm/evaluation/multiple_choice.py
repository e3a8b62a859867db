"""Multiple choice: PIQA, and any set in the generic JSONL shape.

Generic format (`--task mc:PATH`), one JSON object per line:

    {"context": "To open a jar,", "choices": ["twist the lid.", "paint the lid."], "gold": 0}

`context` is a string (may be empty), `choices` a list of at least two
non-empty strings (items may differ in count), `gold` the 0-based index of the
right choice; other fields are ignored. Each choice is scored as
log P(choice | context) summed over its units. A causal model reads context
then choice, with one space put between them when neither side has one at the
seam; an encoder-decoder reads the context in its encoder and the choice as the
target, unchanged. Accuracy is reported raw (highest total log-probability) and
normalised by the choice's UTF-8 byte length, without the seam space (highest
log-probability per byte; lm-eval's acc_norm on ASCII text), which removes the
bias towards short choices.

PIQA (validation, 1,838 items) is read from its release files, `valid.jsonl`
(goal, sol1, sol2) and `valid-labels.lst` (the gold index per line), as
context "Question: <goal>\\nAnswer:" and choices sol1 and sol2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stlm.errors import UserError
from stlm.evaluation.base import EvalModel, EvalOptions, TaskResult, data_subdir
from stlm.evaluation.hub import PIQA, load_rows
from stlm.evaluation.jsonl import read_jsonl, text_field
from stlm.evaluation.metrics import wilson_interval
from stlm.evaluation.record import markdown_table
from stlm.evaluation.scoring import Family

GENERIC_FIELDS = ("context", "choices", "gold")
PIQA_FIELDS = ("goal", "sol1", "sol2")
PIQA_REFERENCES = (("chance", "50", "50"), ("GPT-2 small (124M), common harnesses", "62-64", ""))


@dataclass(frozen=True)
class MCItem:
    context: str
    choices: tuple[str, ...]
    gold: int
    where: str  # "path:line", for error messages and per-item output


@dataclass(frozen=True)
class MCOutcome:
    right: int  # items whose choice of highest total log-probability is gold
    right_norm: int  # items whose choice of highest log-probability per byte is gold
    n_items: int
    predictions: list[tuple[int, int]]  # (raw choice, normalised choice) per item
    truncated: int = 0  # choices longer than the model's context, scored on their tail

    @property
    def accuracy(self) -> float:
        """%, highest total log-probability."""
        return 100.0 * self.right / self.n_items

    @property
    def accuracy_norm(self) -> float:
        """%, highest log-probability per byte of the choice."""
        return 100.0 * self.right_norm / self.n_items

    def interval(self, right: int) -> tuple[float, float]:
        """The 95% Wilson interval, in %, of `right` of these items."""
        lo, hi = wilson_interval(right, self.n_items)
        return 100.0 * lo, 100.0 * hi


def load_multiple_choice(path: Path, *, n_choices: int | None = None, limit: int | None = None) -> list[MCItem]:
    """Items of a generic multiple-choice JSONL file (format in the module docstring)."""
    path = Path(path)
    items = []
    for line_no, obj in read_jsonl(path, GENERIC_FIELDS, what="multiple-choice"):
        where = f"{path}:{line_no}"
        context = text_field(obj, "context", path, line_no, allow_empty=True)
        choices = obj["choices"]
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise UserError(f"{where}: 'choices' must be a list of strings")
        items.append(_checked(MCItem(context, tuple(choices), obj["gold"], where), n_choices))
        if limit is not None and len(items) >= limit:
            break
    return items


def load_piqa(directory: Path, *, limit: int | None = None) -> list[MCItem]:
    """PIQA validation from its release files (valid.jsonl + valid-labels.lst)."""
    questions, labels_path = Path(directory) / "valid.jsonl", Path(directory) / "valid-labels.lst"
    if not labels_path.is_file():
        raise UserError(
            f"PIQA labels file {labels_path} does not exist (it holds the gold index of each line of valid.jsonl)"
        )
    labels = labels_path.read_text(encoding="utf-8").split("\n")
    if labels and labels[-1] == "":
        labels.pop()
    items = []
    for line_no, obj in read_jsonl(questions, PIQA_FIELDS, what="PIQA"):
        goal = text_field(obj, "goal", questions, line_no)
        sols = tuple(text_field(obj, name, questions, line_no) for name in ("sol1", "sol2"))
        if line_no > len(labels):
            raise UserError(f"{labels_path} has {len(labels)} lines but {questions} has a question on line {line_no}")
        label = labels[line_no - 1].strip()
        if label not in ("0", "1"):
            raise UserError(f"{labels_path}:{line_no}: gold index must be 0 or 1, got {label!r}")
        items.append(_checked(MCItem(f"Question: {goal}\nAnswer:", sols, int(label), f"{questions}:{line_no}"), 2))
        if limit is not None and len(items) >= limit:
            break
    if limit is None and len(items) != len(labels):
        raise UserError(f"{labels_path} has {len(labels)} labels but {questions} has {len(items)} questions")
    return items


def _checked(item: MCItem, n_choices: int | None) -> MCItem:
    count = len(item.choices)
    if count < 2:
        raise UserError(f"{item.where}: needs at least 2 choices, got {count}")
    if n_choices is not None and count != n_choices:
        raise UserError(f"{item.where}: needs exactly {n_choices} choices, got {count}")
    if any(not c.strip() for c in item.choices):
        raise UserError(f"{item.where}: a choice is empty")
    if isinstance(item.gold, bool) or not isinstance(item.gold, int) or not 0 <= item.gold < count:
        raise UserError(f"{item.where}: 'gold' must be an index from 0 to {count - 1}, got {item.gold!r}")
    return item


def continuation(context: str, choice: str, family: Family) -> str:
    """The text scored after `context`: the choice, with a space at the seam for causal models."""
    if not family.encoder_decoder and context and not context[-1].isspace() and not choice[0].isspace():
        return " " + choice
    return choice


def choose(model: EvalModel, items: list[MCItem]) -> MCOutcome:
    """Score every choice of every item in one batched pass; pick raw and length-normalised."""
    requests = [(item.context, continuation(item.context, c, model.family)) for item in items for c in item.choices]
    all_scores = model.score(requests)
    truncated = sum(s.n_units < len(model.tokenizer.encode(cont)) for s, (_, cont) in zip(all_scores, requests))
    scores = iter(all_scores)
    predictions, right, right_norm = [], 0, 0
    for item in items:
        scored = [next(scores) for _ in item.choices]
        raw = max(range(len(scored)), key=lambda i: scored[i].logprob)
        n_bytes = [len(c.encode("utf-8")) for c in item.choices]  # the choice itself, not the seam space
        norm = max(range(len(scored)), key=lambda i: scored[i].logprob / n_bytes[i])
        predictions.append((raw, norm))
        right += raw == item.gold
        right_norm += norm == item.gold
    return MCOutcome(right, right_norm, len(items), predictions, truncated)


def load_piqa_hub(*, limit: int | None = None, cache_dir: Path | None = None) -> tuple[list[MCItem], list[Path]]:
    """PIQA validation from the Hub copy (fields goal, sol1, sol2, label), and the files read."""
    hub = load_rows(PIQA, "validation", cache_dir=cache_dir)
    items = []
    for n, row in enumerate(hub.rows, start=1):
        where = f"{PIQA.repo}:validation:{n}"
        if row.get("label") not in (0, 1):
            raise UserError(f"{where}: gold index must be 0 or 1, got {row.get('label')!r}")
        sols = (str(row["sol1"]), str(row["sol2"]))
        items.append(_checked(MCItem(f"Question: {row['goal']}\nAnswer:", sols, int(row["label"]), where), 2))
        if limit is not None and len(items) >= limit:
            break
    return items, hub.files


def run_piqa(model: EvalModel, options: EvalOptions) -> TaskResult:
    if options.data_dir is None:
        items, files = load_piqa_hub(limit=options.limit, cache_dir=options.hf_cache_dir)
        return _result("piqa", model, options, items, files, PIQA_REFERENCES)
    directory = data_subdir(options, "piqa")
    items = load_piqa(directory, limit=options.limit)
    files = [directory / "valid.jsonl", directory / "valid-labels.lst"]
    return _result("piqa", model, options, items, files, PIQA_REFERENCES)


def run_generic(model: EvalModel, options: EvalOptions, path: Path) -> TaskResult:
    items = load_multiple_choice(path, limit=options.limit)
    return _result(f"mc:{path}", model, options, items, [path], ())


def _result(task, model, options, items, files, references) -> TaskResult:
    outcome = choose(model, items)
    (lo, hi), (lo_norm, hi_norm) = outcome.interval(outcome.right), outcome.interval(outcome.right_norm)
    rows = [
        ("**this model**", f"**{outcome.accuracy:.1f}**", f"**{outcome.accuracy_norm:.1f}**", f"{outcome.n_items:,}")
    ]
    rows += [(name, raw, norm, "") for name, raw, norm in references]
    table = markdown_table(("model", "accuracy %", "accuracy % (per byte)", "items"), rows, right=(1, 2, 3))
    return TaskResult(
        task=task,
        metrics={
            "accuracy": outcome.accuracy,
            "accuracy_norm": outcome.accuracy_norm,
            "items": outcome.n_items,
            "truncated_choices": outcome.truncated,
        },
        markdown=f"{table}\n\n95% intervals (Wilson, over the items): {lo:.1f}-{hi:.1f} raw, {lo_norm:.1f}-{hi_norm:.1f} per byte.",
        summary=f"{task} accuracy {outcome.accuracy:.1f}% raw ({lo:.1f}-{hi:.1f}), {outcome.accuracy_norm:.1f}% per byte "
        f"({lo_norm:.1f}-{hi_norm:.1f}) over {outcome.n_items:,} items, 95% intervals"
        + (f" ({outcome.truncated} choices longer than the context scored on their tail)" if outcome.truncated else ""),
        data_files=files,
        settings={
            "limit": options.limit,
            "batch_size": model.batch_size,
            "normalisation": "log-probability / UTF-8 bytes of the choice",
        },
        details={
            "accuracy_ci95": [lo, hi],
            "accuracy_norm_ci95": [lo_norm, hi_norm],
            "predictions": [
                {"item": item.where, "gold": item.gold, "raw": raw, "norm": norm}
                for item, (raw, norm) in zip(items, outcome.predictions)
            ],
        },
    )
