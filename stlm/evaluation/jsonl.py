"""JSON lines for benchmark data, with errors that name the file and the line.

Every benchmark file is read through `read_jsonl`: a user who points a task at
a malformed file learns which line is wrong and why, in one line, instead of a
KeyError from deep inside a task.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stlm.errors import UserError


def read_jsonl(path: Path, required: tuple[str, ...], *, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; every object has the `required` fields."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    seen = 0
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(_lines(fh, path), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise UserError(
                    f"{path}:{line_no}: not valid JSON ({exc}); each line must be one JSON object"
                ) from None
            except RecursionError:
                raise UserError(
                    f"{path}:{line_no}: JSON nested too deeply; each line must be one JSON object"
                ) from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
            missing = [name for name in required if name not in obj]
            if missing:
                raise UserError(
                    f"{path}:{line_no}: missing field(s) {', '.join(map(repr, missing))} "
                    f"(a {what} line needs {', '.join(required)})"
                )
            seen += 1
            yield line_no, obj
    if seen == 0:
        raise UserError(f"{what} file {path} is empty; it needs one JSON object per line")


def text_field(obj: dict[str, Any], name: str, path: Path, line_no: int, *, allow_empty: bool = False) -> str:
    """A string field, checked: not a number or a list, and not empty unless allowed."""
    value = obj[name]
    if not isinstance(value, str):
        raise UserError(f"{path}:{line_no}: field {name!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise UserError(f"{path}:{line_no}: field {name!r} is empty")
    return value


def _lines(fh, path: Path) -> Iterator[str]:
    try:
        yield from fh
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (invalid byte at offset {exc.start})") from None
