"""BLiMP: 67 phenomena x 1,000 minimal pairs; the model should prefer the grammatical sentence.

A pair counts as right when log P(sentence_good) > log P(sentence_bad), each
sentence scored whole (empty context: after BOS for a causal model, from an
empty encoder input for T5). Accuracy is reported per phenomenon (the file's
UID) and overall (over all pairs; every phenomenon has the same count, so this
equals the mean over phenomena when no --limit cuts them unevenly). A tie
counts as wrong: the release holds 7 pairs whose two sentences are identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stlm.errors import UserError
from stlm.evaluation.base import EvalModel, EvalOptions, TaskResult, data_subdir
from stlm.evaluation.jsonl import read_jsonl, text_field
from stlm.evaluation.record import markdown_table

N_PHENOMENA = 67
# Overall accuracy (%) reported by Warstadt et al. (2020), for orientation.
REFERENCES = (("5-gram", 61.2), ("LSTM", 69.8), ("Transformer-XL", 69.6), ("GPT-2 (1.5B)", 81.5), ("human", 88.6))
FIELDS = ("sentence_good", "sentence_bad")


@dataclass(frozen=True)
class Phenomenon:
    uid: str  # e.g. "adjunct_island"
    field: str  # morphology | syntax | semantics | syntax/semantics
    path: Path
    pairs: list[tuple[str, str]]  # (good, bad)


def load_blimp(directory: Path, limit: int | None = None) -> list[Phenomenon]:
    """Every *.jsonl file of a BLiMP folder, in name order; the first `limit` pairs of each."""
    directory = Path(directory)
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise UserError(f"{directory} holds no BLiMP .jsonl files")
    return [_load_phenomenon(path, limit) for path in files]


def _load_phenomenon(path: Path, limit: int | None) -> Phenomenon:
    pairs, field = [], ""
    for line_no, obj in read_jsonl(path, FIELDS, what="BLiMP"):
        good = text_field(obj, "sentence_good", path, line_no)
        bad = text_field(obj, "sentence_bad", path, line_no)
        field = field or str(obj.get("field", ""))
        pairs.append((good, bad))
        if limit is not None and len(pairs) >= limit:
            break
    return Phenomenon(uid=path.stem, field=field, path=path, pairs=pairs)


def accuracy_by_phenomenon(model: EvalModel, phenomena: list[Phenomenon]) -> dict[str, tuple[int, int]]:
    """uid -> (pairs right, pairs); all sentences scored in one batched pass."""
    sentences = sorted({s for p in phenomena for pair in p.pairs for s in pair})
    scores = model.score([("", s) for s in sentences])
    logprob = {s: score.logprob for s, score in zip(sentences, scores)}
    return {p.uid: (sum(logprob[good] > logprob[bad] for good, bad in p.pairs), len(p.pairs)) for p in phenomena}


def run_blimp(model: EvalModel, options: EvalOptions) -> TaskResult:
    directory = data_subdir(options, "blimp")
    phenomena = load_blimp(directory, options.limit)
    counts = accuracy_by_phenomenon(model, phenomena)
    right = sum(r for r, _ in counts.values())
    total = sum(n for _, n in counts.values())
    overall = 100.0 * right / total
    per = {
        p.uid: {"field": p.field, "accuracy": 100.0 * counts[p.uid][0] / counts[p.uid][1], "pairs": counts[p.uid][1]}
        for p in phenomena
    }
    note = "" if len(phenomena) == N_PHENOMENA else f" (only {len(phenomena)} of {N_PHENOMENA} phenomena found)"
    table = markdown_table(
        ("model", "BLiMP accuracy %", "pairs"),
        [("**this model**", f"**{overall:.1f}**", f"{total:,}")]
        + [(name, f"{acc:.1f}", "67,000") for name, acc in REFERENCES],
        right=(1, 2),
    )
    detail = markdown_table(
        ("phenomenon", "field", "accuracy %", "pairs"),
        [(uid, d["field"], f"{d['accuracy']:.1f}", d["pairs"]) for uid, d in per.items()],
        right=(2, 3),
    )
    return TaskResult(
        task="blimp",
        metrics={"accuracy": overall, "pairs": total, "phenomena": len(phenomena)},
        markdown=f"{table}\n\nPer phenomenon{note}:\n\n{detail}",
        summary=f"BLiMP accuracy {overall:.1f}% over {total:,} pairs in {len(phenomena)} phenomena (5-gram reference 61.2)",
        data_files=[p.path for p in phenomena],
        settings={
            "limit_per_phenomenon": options.limit,
            "batch_size": model.batch_size,
            "rule": "logP(good) > logP(bad), whole sentence, empty context",
        },
        details={"per_phenomenon": per, "references": dict(REFERENCES)},
    )
