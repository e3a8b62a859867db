"""Documents from the user's own files: a text file, a folder of them, or JSONL.

Text is taken exactly as stored (no newline or whitespace normalisation) so a
model sees the user's bytes; only a leading UTF-8 byte-order mark is dropped,
since it marks the encoding rather than being part of the text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from stlm.data.lazy import LAZY_BYTES, LazyDocuments
from stlm.errors import UserError

# What counts as a text file when a folder is given. A single file passed by
# name is read as text whatever its suffix: the user chose it.
TEXT_SUFFIXES = frozenset({".txt", ".md", ".rst", ".text", ".markdown"})


def load_path(path: Path, *, text_field: str = "text") -> Sequence[str]:
    """Documents from an existing file or folder; above `LAZY_BYTES` a folder or JSONL stays on disk."""
    if path.is_dir():
        return load_text_dir(path)
    if not path.is_file():  # reading a FIFO or a device would block or never end
        raise UserError(f"{path} is not a regular file (a pipe or a device?): give a text file, folder or .jsonl")
    if path.suffix.lower() == ".jsonl":
        return load_jsonl(path, text_field=text_field)
    return [load_text_file(path)]


def load_text_file(path: Path) -> str:
    """The whole file as one document; empty (or whitespace-only) is an error."""
    text = _decode(_read_bytes(path), path)
    if not text.strip():
        raise UserError(f"{path} is empty: give a file with some text in it")
    return text


def load_text_dir(root: Path) -> Sequence[str]:
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
    if sum(p.stat().st_size for p in files) > LAZY_BYTES:
        # One pass to drop empty files, then a sequence of paths read on access.
        kept = [p for p in files if _decode(_read_bytes(p), p).strip()]
        docs: Sequence[str] = LazyDocuments(kept, lambda p: _decode(_read_bytes(p), p))
    else:
        docs = [text for text in (_decode(_read_bytes(p), p) for p in files) if text.strip()]
    if not docs:
        suffixes = ", ".join(sorted(TEXT_SUFFIXES))
        raise UserError(f"{root} holds no non-empty text files ({suffixes}): add some or point at a file")
    return docs


def load_jsonl(path: Path, *, text_field: str = "text") -> Sequence[str]:
    """One document per JSON object line, taken from `text_field`.

    Blank lines are skipped; records whose text is empty are skipped too.
    """
    if path.stat().st_size > LAZY_BYTES:
        return _lazy_jsonl(path, text_field)
    content = _decode(_read_bytes(path), path)
    docs: list[str] = []
    # split("\n"), not splitlines(): JSON strings may hold a raw U+2028 that
    # splitlines() would treat as a line break.
    for lineno, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        text = _record_text(line, text_field, f"{path}:{lineno}")
        if text:
            docs.append(text)
    if not docs:
        raise UserError(f"{path} has no non-empty {text_field!r} texts: check the file and the text field")
    return docs


def _lazy_jsonl(path: Path, text_field: str) -> LazyDocuments:
    """One checking pass over the lines notes where the non-empty texts start; they are read on access."""
    offsets: list[int] = []
    with open(path, "rb") as fh:
        position = 0
        for lineno, raw in enumerate(fh, start=1):
            start, position = position, position + len(raw)
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                start, raw = start + 3, raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(
                    f"{path} is not UTF-8 text (invalid byte at offset {start + exc.start}): "
                    f"convert it to UTF-8, e.g. with iconv"
                ) from None
            if line.strip() and _record_text(line, text_field, f"{path}:{lineno}"):
                offsets.append(start)
    if not offsets:
        raise UserError(f"{path} has no non-empty {text_field!r} texts: check the file and the text field")

    def read_all(keys: Sequence[int]) -> Iterator[str]:
        with open(path, "rb") as fh:
            for offset in keys:
                fh.seek(int(offset))
                yield json.loads(fh.readline())[text_field]

    return LazyDocuments(np.asarray(offsets, dtype=np.int64), lambda offset: next(read_all([offset])), read_all)


def _record_text(line: str, text_field: str, where: str) -> str:
    """The checked text of one JSONL line ("" when the record's text is empty)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg}): fix or remove the line") from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply: fix or remove the line") from None
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object with a {text_field!r} field")
    if text_field not in record:
        fields = ", ".join(repr(k) for k in list(record)[:10]) or "none"
        raise UserError(
            f"{where}: no {text_field!r} field (fields: {fields}); set the text field to the one holding the text"
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
    return text


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
            f"{path} is not UTF-8 text (invalid byte at offset {exc.start}): convert it to UTF-8, e.g. with iconv"
        ) from None
    return text.removeprefix("\ufeff")
