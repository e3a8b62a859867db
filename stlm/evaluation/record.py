"""Provenance: what a reported number was measured on, so it can always be traced.

A result records the model (preset or checkpoint, with the SHA-256 of its
weights from the checkpoint manifest), the SHA-256 of every data file it read,
the settings, and the code and package versions.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_hash(ckpt: str | Path) -> str | None:
    """SHA-256 of a checkpoint's weights as its manifest records them (None when there is no manifest)."""
    manifest = Path(ckpt) / "manifest.json"
    if not manifest.is_file():
        return None
    entry = json.loads(manifest.read_text(encoding="utf-8")).get("model.safetensors") or {}
    return entry.get("sha256")


def provenance(
    *,
    model: str,
    checkpoint: str | Path | None = None,
    data_files: dict[str, str | Path] | None = None,
    settings: dict[str, Any] | None = None,
    environment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One JSON-ready record: model, checkpoint and its weights' hash, data files and hashes, settings.

    `environment` is the caller's code/package/device description (the training
    layer's `run_header`); evaluation does not import the training layer.
    """
    return {
        "model": model,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_sha256": None if checkpoint is None else checkpoint_hash(checkpoint),
        "data": {name: {"path": str(path), "sha256": file_sha256(path)} for name, path in (data_files or {}).items()},
        "settings": settings or {},
        "environment": environment or {},
    }
