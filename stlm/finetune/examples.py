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

    def to_json(self) -> str:
        return json.dumps({"input": self.input, "target": self.target}, ensure_ascii=False)


def load_examples(
    path: str | Path, *, input_field: str, target_field: str, context_field: str | None = None
) -> list[Example]:
    """Examples of a .jsonl (one JSON object per line) or .csv (a header row) file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    if path.suffix.lower() not in (".jsonl", ".csv"):
        raise UserError(f"data file {path} must be .jsonl (one JSON object per line) or .csv (with a header row)")
    fields = (input_field, target_field) + ((context_field,) if context_field else ())
    rows = _csv_rows(path, fields) if path.suffix.lower() == ".csv" else _jsonl_rows(path, fields)
    examples = []
    for line, row in rows:
        where = f"{path}:{line}"
        if not row[target_field].strip():
            raise UserError(f"{where}: the target ({target_field!r}) is empty; every example needs a target")
        text = row[input_field]
        if context_field:
            text = f"question: {text}\ncontext: {row[context_field]}"
        examples.append(Example(text, row[target_field], where))
    if not examples:
        raise UserError(f"data file {path} holds no examples")
    return examples


def _jsonl_rows(path: Path, fields: Sequence[str]):
    for line, row in read_jsonl(path, tuple(fields), what="data"):
        for name in fields:
            if not isinstance(row[name], str):
                raise UserError(f"{path}:{line}: field {name!r} must be a string, got {type(row[name]).__name__}")
        yield line, row


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
