"""Where a number came from: the provenance block stored with every evaluation result.

A result without its model, checkpoint hash, data hash and settings cannot be
compared or reproduced, so every writer of results (`stlm evaluate`, fine-tuning
validation, benchmarks) builds its record with `provenance` and writes it with
`write_results`:

    {"task": ..., "metrics": {...}, ...,
     "provenance": {"model": {name, family, n_params, tokenizer},
                    "checkpoint": {path, step, manifest_sha256, weights_sha256},
                    "data": [{path, bytes, sha256}, ...],
                    "settings": {...}, "stlm_version", "git_commit", "versions",
                    "device", "time"}}

The checkpoint hash is the SHA-256 of its manifest.json, which itself lists the
SHA-256 of every file of the checkpoint: one string pins weights and config.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from stlm.data.download import file_sha256
from stlm.errors import UserError


def provenance(
    *,
    model: torch.nn.Module,
    config: dict[str, Any],
    checkpoint: Path,
    data_files: Iterable[Path] = (),
    settings: dict[str, Any] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Everything needed to trace a result back to its model, data and settings."""
    from stlm.runtime import run_header  # versions and git commit, as every run records them

    header = run_header(device)
    model_cfg = config.get("model_config", {})
    family = model_cfg.get("family")
    return {
        "model": {
            "name": config.get("run", {}).get("model") or family,
            "family": family,
            "n_params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),  # tied once
            "tokenizer": config.get("tokenizer") or {"name": "byte"},
        },
        "checkpoint": checkpoint_record(checkpoint),
        "data": [file_record(path) for path in data_files],
        "settings": dict(settings or {}),
        "stlm_version": header["versions"]["stlm"],
        "git_commit": header["git_commit"],
        "versions": header["versions"],
        "device": header["device"],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def checkpoint_record(ckpt: Path) -> dict[str, Any]:
    """Path, step and hashes of a checkpoint directory (see stlm.checkpoint)."""
    ckpt = Path(ckpt)
    manifest_path = ckpt / "manifest.json"
    record: dict[str, Any] = {
        "path": str(ckpt.resolve()),
        "step": None,
        "manifest_sha256": None,
        "weights_sha256": None,
    }
    if manifest_path.is_file():
        record["manifest_sha256"] = file_sha256(manifest_path)
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        record["weights_sha256"] = (manifest.get("model.safetensors") or {}).get("sha256")
    state_path = ckpt / "state.json"
    if state_path.is_file():
        record["step"] = json.loads(state_path.read_text(encoding="utf-8")).get("step")
    return record


def file_record(path: Path) -> dict[str, Any]:
    path = Path(path)
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def write_results(result: dict[str, Any], markdown: str, json_path: Path) -> tuple[Path, Path]:
    """Write `result` as JSON and `markdown` beside it (same stem, .md); returns both paths."""
    json_path = Path(json_path)
    md_path = json_path.with_suffix(".md")
    for path, text in ((json_path, json.dumps(result, indent=2) + "\n"), (md_path, markdown.rstrip("\n") + "\n")):
        partial = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:  # via a temporary file, so a full disk never leaves half a result (or spoils an earlier one)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, path)
        except OSError as exc:  # a full disk, a folder by that name, no permission: one line
            with contextlib.suppress(OSError):
                partial.unlink()
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    return json_path, md_path


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """A GitHub markdown table; columns in `right` are right-aligned (numbers)."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
