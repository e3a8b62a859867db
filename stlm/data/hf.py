"""Documents from a Hugging Face dataset (optional: `pip install stlm[hf]`).

Spec syntax: `hf:NAME` or `hf:NAME:CONFIG`, e.g. `hf:roneneldan/TinyStories`
or `hf:wikitext:wikitext-2-raw-v1`. The `train` split is read; one document
per row, from the text field.

With `streaming=True` rows are read as they arrive (`load_dataset(...,
streaming=True)`): nothing is downloaded in full or converted to Arrow first,
and `max_documents` stops reading after that many texts, so a slice of a
dataset far larger than the disk can be used.
"""

from __future__ import annotations

from stlm.errors import UserError

HF_PREFIX = "hf:"


def parse_hf_spec(spec: str) -> tuple[str, str | None]:
    """("NAME", "CONFIG" or None) from "hf:NAME[:CONFIG]"."""
    body = spec[len(HF_PREFIX) :] if spec.startswith(HF_PREFIX) else spec
    name, _, config = body.partition(":")
    if not name:
        raise UserError(f"{spec!r} names no dataset: write hf:NAME or hf:NAME:CONFIG")
    return name, config or None


def load_hf_dataset(
    spec: str, *, text_field: str = "text", split: str = "train", streaming: bool = False, max_documents: int = 0
) -> list[str]:
    name, config = parse_hf_spec(spec)
    try:
        import datasets  # optional and heavy: imported only when an hf: spec is used
    except ImportError:
        raise UserError(f"{spec} needs the Hugging Face `datasets` package: pip install stlm[hf]") from None
    try:
        dataset = datasets.load_dataset(name, config, split=split, **({"streaming": True} if streaming else {}))
    except Exception as exc:
        what = f"{name!r}" + (f" config {config!r}" if config else "") + f" split {split!r}"
        raise UserError(
            f"Hugging Face dataset {what} could not be loaded ({type(exc).__name__}: "
            f"{_first_line(exc)}): check the name; if you are offline, the dataset could not be "
            f"loaded offline from the local Hugging Face cache: fetch it once with network access"
        ) from None
    if streaming:
        return _streamed_texts(dataset, name, split, text_field, max_documents)
    columns = list(getattr(dataset, "column_names", None) or [])
    if columns and text_field not in columns:
        raise UserError(
            f"dataset {name!r} has no {text_field!r} column (columns: {', '.join(columns)}); "
            f"set the text field to the one holding the text"
        )
    docs = [text for text in dataset[text_field] if isinstance(text, str) and text]
    if max_documents:
        docs = docs[:max_documents]
    if not docs:
        raise UserError(f"dataset {name!r} split {split!r} has no non-empty {text_field!r} texts")
    return docs


def _streamed_texts(rows, name: str, split: str, text_field: str, max_documents: int) -> list[str]:
    """Non-empty texts of a streamed split, row by row, stopping after `max_documents` (0: all)."""
    docs: list[str] = []
    for row in rows:
        if text_field not in row:
            raise UserError(
                f"dataset {name!r} has no {text_field!r} field (fields: {', '.join(row)}); "
                f"set the text field to the one holding the text"
            )
        text = row[text_field]
        if isinstance(text, str) and text:
            docs.append(text)
            if max_documents and len(docs) >= max_documents:
                break
    if not docs:
        raise UserError(f"dataset {name!r} split {split!r} has no non-empty {text_field!r} texts")
    return docs


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "no details"
