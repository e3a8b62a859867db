"""Documents from a Hugging Face dataset (optional: `pip install stlm[hf]`).

Spec syntax: `hf:NAME` or `hf:NAME:CONFIG`, e.g. `hf:roneneldan/TinyStories`
or `hf:wikitext:wikitext-2-raw-v1`. The `train` split is read; one document
per row, from the text field.
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


def load_hf_dataset(spec: str, *, text_field: str = "text", split: str = "train") -> list[str]:
    name, config = parse_hf_spec(spec)
    try:
        import datasets  # optional and heavy: imported only when an hf: spec is used
    except ImportError:
        raise UserError(
            f"{spec} needs the Hugging Face `datasets` package: pip install stlm[hf]"
        ) from None
    try:
        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many unrelated types for "not available"
        what = f"{name!r}" + (f" config {config!r}" if config else "") + f" split {split!r}"
        raise UserError(
            f"Hugging Face dataset {what} could not be loaded ({type(exc).__name__}: "
            f"{_first_line(exc)}): check the name; if you are offline, the dataset could not be "
            f"loaded offline from the local Hugging Face cache: fetch it once with network access"
        ) from None
    columns = list(getattr(dataset, "column_names", None) or [])
    if columns and text_field not in columns:
        raise UserError(
            f"dataset {name!r} has no {text_field!r} column (columns: {', '.join(columns)}); "
            f"set the text field to the one holding the text"
        )
    docs = [text for text in dataset[text_field] if isinstance(text, str) and text]
    if not docs:
        raise UserError(f"dataset {name!r} split {split!r} has no non-empty {text_field!r} texts")
    return docs


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "no details"
