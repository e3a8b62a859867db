"""The offline-mix builder on local fake archives (no network: tests/data/conftest.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from stlm.data import list_corpora, split_documents
from stlm.data.markup import asciidoc_to_text, gcide_entries, pod_to_text, rst_to_text, wordnet_glosses
from stlm.data.offline_mix import (
    READERS,
    SOURCES,
    MixSource,
    build_offline_mix,
    corpus_path,
    load_offline_mix,
    read_ar_member,
)
from stlm.errors import UserError

RST = """.. SPDX-License-Identifier: GPL-2.0

.. _label:

Title of the page
=================

.. module:: demo
   :synopsis: not prose

Use :func:`spam` with ``eggs`` as shown below::

   spam(eggs)

.. function:: spam(eggs)
   :noindex:

   Cook the *eggs*, see `the docs <https://example.org>`_.
"""
RST_TEXT = """Title of the page

Use spam with eggs as shown below:

   spam(eggs)

spam(eggs)

   Cook the *eggs*, see the docs.
"""

POD = """=head1 NAME

perlfake - B<Bold> and C<< $x->y >> and E<lt>tagE<gt> and L<text|perlfunc/open>

=over 4

=item *

A bullet X<index> with I<italics>.

=back

=begin html

<p>not prose</p>

=end html

=cut
"""
POD_TEXT = """NAME

perlfake - Bold and $x->y and <tag> and text

A bullet  with italics.
"""

GCIDE = """00-database-info
     This file was converted from the original database.

Abuse \\A*buse"\\, v. t.
   1. To put to a wrong use; see {Misuse}.
      [1913 Webster]

Abyss \\A*byss"\\, n.
   A bottomless gulf.
      [PJC]
"""

# Real data lines end in two spaces after the gloss.
WORDNET = (
    "  1 This software and database is being provided to you, the LICENSEE, by\n"
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known  \n"
    '00002137 03 a 02 good(a) 0 full_of_life 0 000 | having desirable qualities; "a good book"  \n'
)

GUTENBERG = (
    "Header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nTo be, or not to be.\n"
    "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nLicence\n"
)


def _tar(members: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _deb(members: dict[str, bytes]) -> bytes:
    """A Debian package as dpkg-deb writes it: ar(debian-binary, control.tar.xz, data.tar.xz)."""
    parts = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", _tar({"./control": b"Package: fake\n"}, "w:xz")),
        ("data.tar.xz", _tar(members, "w:xz")),
    ]
    out = bytearray(b"!<arch>\n")
    for name, data in parts:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode("ascii")
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def _sources(tmp_path: Path) -> list[MixSource]:
    """Fake archives in the layouts of the real ones, and a table pointing at them."""
    archives = {
        "docs.deb": _deb(
            {
                "./usr/share/doc/fake/_sources/b.rst.txt": RST.encode(),
                "./usr/share/doc/fake/_sources/a.rst.txt": b"Second page\n-----------\n\nMore text.\n",
                "./usr/share/doc/fake/_sources/empty.rst.txt": b".. only a comment\n",
                "./usr/share/doc/fake/index.html": b"<p>skipped</p>",
            }
        ),
        "perl.deb": _deb({"./usr/share/perl/pod/perlfake.pod": POD.encode()}),
        "dict.deb": _deb({"./usr/share/dictd/gcide.dict.dz": gzip.compress(GCIDE.encode())}),
        "wn.deb": _deb({"./usr/share/wordnet/data.noun": WORDNET.encode()}),
        "books.tar.gz": _tar({"books/texts/x_gut.txt": GUTENBERG.encode(), "books/setup.py": b"no"}, "w:gz"),
    }
    layout = {
        "docs.deb": ("./usr/share/doc/fake/_sources/", ".rst.txt", "rst"),
        "perl.deb": ("./usr/share/perl/pod/", ".pod", "pod"),
        "dict.deb": ("./usr/share/dictd/", ".dict.dz", "gcide"),
        "wn.deb": ("./usr/share/wordnet/data.", "", "wordnet"),
        "books.tar.gz": ("books/texts/", "_gut.txt", "gutenberg"),
    }
    sources = []
    for name, data in archives.items():
        path = tmp_path / "mirror" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        prefix, suffix, reader = layout[name]
        sha = hashlib.sha256(data).hexdigest()
        sources.append(MixSource(name, path.as_uri(), sha, "test", prefix, suffix, reader))
    return sources


EXPECTED = [
    "Second page\n\nMore text.\n",
    RST_TEXT,
    POD_TEXT,
    'Abuse \\A*buse"\\, v. t.\n   1. To put to a wrong use; see Misuse.\n\nAbyss \\A*byss"\\, n.\n   A bottomless gulf.\n',
    'entity: that which is perceived or known\n\ngood, full of life: having desirable qualities; "a good book"\n',
    "To be, or not to be.\n",
]


def test_build_cleans_caches_and_reloads_offline(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    cache = tmp_path / "cache"
    docs = load_offline_mix(cache, sources)
    assert list(docs) == EXPECTED
    records = [json.loads(line) for line in corpus_path(cache, sources).read_text().splitlines()]
    assert [r["source"] for r in records] == ["docs.deb", "docs.deb", "perl.deb", "dict.deb", "wn.deb", "books.tar.gz"]

    # The mirror is gone: a second load reads the built corpus, not the archives.
    for source in sources:
        Path(source.url.removeprefix("file://")).unlink()
    assert list(load_offline_mix(cache, sources)) == EXPECTED


def test_build_is_deterministic_documents_and_split(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    first = build_offline_mix(tmp_path / "a", sources)
    second = build_offline_mix(tmp_path / "b", sources)
    assert first.read_bytes() == second.read_bytes()
    docs_a, docs_b = load_offline_mix(tmp_path / "a", sources), load_offline_mix(tmp_path / "b", sources)
    assert split_documents(docs_a, 0.3) == split_documents(docs_b, 0.3)


def test_tampered_download_is_refused_and_nothing_is_built(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    tampered = Path(sources[1].url.removeprefix("file://"))
    tampered.write_bytes(tampered.read_bytes() + b"\0")  # the archive no longer has its pinned hash
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match=r"offline-mix source perl\.deb .* has SHA-256 [0-9a-f]{64}, expected") as err:
        load_offline_mix(cache, sources)
    assert "\n" not in str(err.value)
    assert not (cache / "corpora").exists()
    assert sorted(p.name for p in (cache / "downloads").iterdir()) == ["docs.deb"]  # only what verified


def test_changed_table_builds_a_new_file(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    cache = tmp_path / "cache"
    build_offline_mix(cache, sources)
    fewer = sources[:1]
    assert corpus_path(cache, fewer) != corpus_path(cache, sources)
    assert list(load_offline_mix(cache, fewer)) == EXPECTED[:2]


def test_archive_without_the_members_is_a_user_error(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    wrong = replace(sources[0], prefix="./usr/share/nothing/")
    with pytest.raises(UserError, match="holds no ./usr/share/nothing/"):
        build_offline_mix(tmp_path / "cache", [wrong])


def test_ar_reader_skips_to_the_named_member() -> None:
    deb = _deb({"./x": b"y"})
    assert read_ar_member(deb, "debian-binary") == b"2.0\n"
    assert read_ar_member(deb, "nothing") is None
    assert read_ar_member(b"not an archive", "data.tar") is None


def test_markup_cleaners() -> None:
    assert rst_to_text(RST) == RST_TEXT
    assert pod_to_text("=head2 E<0x41>E<101>E<eacute> I<B<nested>>\n") == "Aeé nested\n"
    assert asciidoc_to_text("git-add(1)\n==========\n\n[verse]\nsee linkgit:git-rm[1] [[x]]\n----\ncode\n") == (
        "git-add(1)\n\nsee git-rm(1)\ncode\n"
    )
    assert gcide_entries(GCIDE)[1] == 'Abyss \\A*byss"\\, n.\n   A bottomless gulf.\n'
    assert wordnet_glosses(WORDNET)[0] == "entity: that which is perceived or known"


def test_real_table_is_pinned_and_listed() -> None:
    assert "offline-mix" in [c.name for c in list_corpora()]
    for source in SOURCES:
        assert source.url.startswith("https://") and len(source.sha256) == 64 and source.reader in READERS
        int(source.sha256, 16)
        # These novels stay out of every training set (issue 14).
        assert "janeaustenr" not in source.url and "r-cran" not in source.url
