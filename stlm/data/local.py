"""Documents from the user's own files: a text file, a folder of them, or JSONL.

Text is taken exactly as stored (no newline or whitespace normalisation) so a
model sees the user's bytes; only a leading UTF-8 byte-order mark is dropped,
since it marks the encoding rather than being part of the text.
"""

from __future__ import annotations

import json
from pathlib import Path

from stlm.errors import UserError

# What counts as a text file when a folder is given. A single file passed by
# name is read as text whatever its suffix: the user chose it.
TEXT_SUFFIXES = frozenset({".txt", ".md", ".rst", ".text", ".markdown"})


def load_path(path: Path, *, text_field: str = "text") -> list[str]:
    """Documents from an existing file or folder."""
    if path.is_dir():
        return load_text_dir(path)
    if path.suffix.lower() == ".jsonl":
        return load_jsonl(path, text_field=text_field)
    return [load_text_file(path)]


def load_text_file(path: Path) -> str:
    """The whole file as one document; empty (or whitespace-only) is an error."""
    text = _decode(_read_bytes(path), path)
    if not text.strip():
        raise UserError(f"{path} is empty: give a file with some text in it")
    return text


def load_text_dir(root: Path) -> list[str]:
    """Every text file under `root`, recursively, in sorted path order.

    Hidden files and folders (.git, .venv ...) are skipped, and so are empty
    files, so a stray empty README does not stop a run.
    """
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in TEXT_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    docs = [text for text in (_decode(_read_bytes(p), p) for p in files) if text.strip()]
    if not docs:
        suffixes = ", ".join(sorted(TEXT_SUFFIXES))
        raise UserError(
            f"{root} holds no non-empty text files ({suffixes}): add some or point at a file"
        )
    return docs


def load_jsonl(path: Path, *, text_field: str = "text") -> list[str]:
    """One document per JSON object line, taken from `text_field`.

    Blank lines are skipped; records whose text is empty are skipped too.
    """
    content = _decode(_read_bytes(path), path)
    docs: list[str] = []
    # split("\n"), not splitlines(): JSON strings may hold a raw U+2028 that
    # splitlines() would treat as a line break.
    for lineno, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not valid JSON ({exc.msg}): fix or remove the line") from None
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object with a {text_field!r} field")
        if text_field not in record:
            fields = ", ".join(repr(k) for k in list(record)[:10]) or "none"
            raise UserError(
                f"{where}: no {text_field!r} field (fields: {fields}); "
                f"set the text field to the one holding the text"
            )
        text = record[text_field]
        if not isinstance(text, str):
            raise UserError(f"{where}: field {text_field!r} is {type(text).__name__}, not a string")
        try:
            # A JSON escape like "\ud800" decodes to a lone surrogate, which
            # cannot be written as UTF-8 later; catch it here, with the line.
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{where}: field {text_field!r} holds an invalid \\u surrogate escape") from None
        if text:
            docs.append(text)
    if not docs:
        raise UserError(f"{path} has no non-empty {text_field!r} texts: check the file and the text field")
    return docs


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def _decode(data: bytes, path: Path) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path} is not UTF-8 text (invalid byte at offset {exc.start}): "
            f"convert it to UTF-8, e.g. with iconv"
        ) from None
    return text.removeprefix("\ufeff")
