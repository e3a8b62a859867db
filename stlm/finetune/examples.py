"""Text-to-text examples from local JSONL or CSV files, checked line by line.

Every mistake in a data file is a `UserError` that names the file and line:
a line that is not a JSON object, a missing field or column, an empty target,
a label outside the label set, a file with no examples at all.

Without a validation file, examples are split deterministically by a hash of
their text and the split seed (the same rule as the pretraining corpora), so
the split does not depend on the file's order.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stlm.errors import UserError
from stlm.evaluation.jsonl import read_jsonl


@dataclass(frozen=True)
class Example:
    input: str
    target: str
    where: str = ""  # "path:line", for error messages
    probs: tuple[tuple[str, float], ...] = ()  # classification soft label: (label, probability), summing to 1

    def to_json(self) -> str:
        row: dict[str, object] = {"input": self.input, "target": self.target}
        if self.probs:
            row["probs"] = dict(self.probs)
        return json.dumps(row, ensure_ascii=False)


def load_examples(
    path: str | Path,
    *,
    input_field: str,
    target_field: str,
    context_field: str | None = None,
    probs_field: str | None = None,
) -> list[Example]:
    """Examples of a .jsonl (one JSON object per line) or .csv (a header row) file.

    With `probs_field`, a JSONL row may hold a soft label there ({label: probability});
    such a row needs no target: its most probable label becomes it.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    if path.suffix.lower() not in (".jsonl", ".csv"):
        raise UserError(f"data file {path} must be .jsonl (one JSON object per line) or .csv (with a header row)")
    fields = (input_field, target_field) + ((context_field,) if context_field else ())
    if path.suffix.lower() == ".csv":
        rows = _csv_rows(path, fields)
    else:
        rows = _jsonl_rows(path, fields, soft=(probs_field, target_field) if probs_field else None)
    examples = []
    for line, row in rows:
        where = f"{path}:{line}"
        probs = _soft_label(row[probs_field], probs_field, where) if probs_field and probs_field in row else ()
        if probs and not row.get(target_field, "").strip():
            row[target_field] = max(probs, key=lambda lp: lp[1])[0]
        if not row[target_field].strip():
            raise UserError(f"{where}: the target ({target_field!r}) is empty; every example needs a target")
        text = row[input_field]
        if context_field:
            text = f"question: {text}\ncontext: {row[context_field]}"
        examples.append(Example(text, row[target_field], where, probs))
    if not examples:
        raise UserError(f"data file {path} holds no examples")
    return examples


def _jsonl_rows(path: Path, fields: Sequence[str], soft: tuple[str, str] | None = None):
    """Rows with every field of `fields` a string; with soft = (probs field, target field), a row
    holding the probs field may leave the target out."""
    required = tuple(f for f in fields if soft is None or f != soft[1])
    for line, row in read_jsonl(path, required, what="data"):
        if soft is not None and soft[1] not in row:
            if soft[0] not in row:
                raise UserError(
                    f"{path}:{line}: missing field {soft[1]!r} (a data line needs a target, or a soft label in {soft[0]!r})"
                )
            row[soft[1]] = ""
        for name in fields:
            if not isinstance(row[name], str):
                raise UserError(f"{path}:{line}: field {name!r} must be a string, got {type(row[name]).__name__}")
        yield line, row


def _soft_label(value: object, field: str, where: str) -> tuple[tuple[str, float], ...]:
    """A {label: probability} object checked and normalised to sum 1."""
    if not isinstance(value, dict) or not value:
        raise UserError(f'{where}: {field!r} must be an object of label: probability, e.g. {{"yes": 0.8, "no": 0.2}}')
    pairs = []
    for label, p in value.items():
        ok = isinstance(p, int | float) and not isinstance(p, bool) and math.isfinite(p) and p >= 0
        if not ok or not label.strip():
            raise UserError(f"{where}: {field!r} holds {label!r}: {p!r}; each label needs a probability >= 0")
        if label.strip() in dict(pairs):
            raise UserError(f"{where}: {field!r} names the label {label.strip()!r} twice")
        pairs.append((label.strip(), float(p)))
    total = sum(p for _, p in pairs)
    if total <= 0:
        raise UserError(f"{where}: the probabilities in {field!r} sum to 0; at least one label needs some")
    return tuple((label, p / total) for label, p in pairs)


def _csv_rows(path: Path, fields: Sequence[str]):
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        try:
            header = reader.fieldnames or []
            missing = [name for name in fields if name not in header]
            if missing:
                raise UserError(f"{path}:1: missing column {missing[0]!r} (columns: {', '.join(header) or 'none'})")
            for row in reader:
                line = reader.line_num  # the line the row ends on
                short = [name for name in fields if row.get(name) is None]
                if short:
                    raise UserError(f"{path}:{line}: row has no value for column {short[0]!r}")
                yield line, row
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{path} is not UTF-8 text (holds the byte {exc.object[exc.start : exc.start + 1]!r}): "
                "save it as UTF-8, e.g. with iconv"
            ) from None
        except csv.Error as exc:  # a field over the csv module's limit (128 KiB), a NUL byte ...
            raise UserError(f"{path}:{reader.line_num}: not readable as CSV ({exc})") from None


def split_examples(examples: Sequence[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, validation) by a hash of each example's text: stable under reordering."""
    train, val = [], []
    for ex in examples:
        digest = hashlib.sha256(f"{seed}\0{ex.input}\0{ex.target}".encode()).digest()
        (val if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else train).append(ex)
    if not train or not val:
        raise UserError(
            f"splitting {len(examples)} examples with val_fraction {val_fraction} left an empty "
            f"{'training' if not train else 'validation'} set; add examples or pass a validation file"
        )
    return train, val


def check_labels(examples: Sequence[Example], labels: Sequence[str], *, what: str) -> None:
    """Every target is one of `labels`; the first that is not is named with its file and line."""
    allowed = set(labels)
    for ex in examples:
        if ex.target.strip() not in allowed:
            where = f"{ex.where}: " if ex.where else ""
            raise UserError(f"{where}{what} label {ex.target.strip()!r} is not in the label set ({', '.join(labels)})")


def write_jsonl(path: Path, examples: Sequence[Example]) -> None:
    """The examples a run used, as JSONL (input, target), so its data can be hashed and rerun."""
    path.write_text("".join(ex.to_json() + "\n" for ex in examples), encoding="utf-8")
