"""Download a file once, check its SHA-256, keep it in the user's cache.

A file is written to a temporary name beside its destination, hashed while
it streams, and renamed into place only when the hash matches, so the cache
never holds a partial or wrong file under the real name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from stlm.errors import UserError

_CHUNK = 1 << 20


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The given cache folder, or the per-user cache folder for stlm."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    import platformdirs  # a core dependency, but only needed when no folder is given

    return Path(platformdirs.user_cache_dir("stlm"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_verified(url: str, sha256: str, dest: Path, *, what: str = "file", timeout: float = 60.0) -> Path:
    """`dest`, downloaded from `url` unless a copy with the right hash is there.

    A cached copy whose hash is wrong (truncated by hand, tampered) is
    replaced by a fresh download rather than trusted.
    """
    if dest.is_file() and file_sha256(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise UserError(
                    f"could not download the {what} from {url} ({reason}); it is fetched once "
                    f"and cached: connect to the internet and retry, or place the file at {dest}"
                ) from None
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha256:
            raise UserError(
                f"the {what} downloaded from {url} has SHA-256 {got}, expected {sha256}; "
                f"nothing was cached: retry, and report it if it happens again"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; it is public data
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
