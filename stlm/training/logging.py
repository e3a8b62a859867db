"""What a run says about itself: a header at the top, metrics as JSON lines."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def format_header(header: dict[str, Any], flops_per_token: float | None = None) -> str:
    """The run header as a few indented lines for the terminal (the full one is in config.json)."""
    versions = ", ".join(f"{k} {v}" for k, v in header.get("versions", {}).items())
    lines = [f"  code {header.get('git_commit') or 'not in a git checkout'}; {versions}"]
    peak = header.get("matmul_peak")
    speed = f"  {header.get('device')}"
    if peak:
        speed += f"; {peak['precision']} matmul peak {peak['flops_per_s'] / 1e9:,.0f} GFLOP/s ({peak.get('source', 'measured')})"
    if flops_per_token:
        speed += f"; {flops_per_token / 1e6:,.1f} MFLOP per token (fwd + bwd matmuls)"
    lines.append(speed)
    return "\n".join(lines)


class MetricsLog:
    """Append-only JSONL metrics; on resume, records past the resumed step are dropped.

    Each record is one `write` on an O_APPEND descriptor, so a kill leaves at most a torn last
    line, never an interleaved one; readers skip such a line with a note (it never blocks a
    resume), and resuming rewrites the file without it (atomically: a kill then loses nothing).
    """

    def __init__(self, path: Path, *, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            records = read_metrics(self.path, what="resuming")
            kept = [r for r in records if _step(r) <= resume_step]
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            tmp.replace(self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)  # one write: the record is whole in the file or (killed) torn at its end
        finally:
            os.close(fd)


def _step(record: dict[str, Any]) -> int:
    step = record.get("step", 0)
    return step if isinstance(step, int) and not isinstance(step, bool) else 1 << 62  # drop what has no step


def read_metrics(path: Path, *, what: str = "") -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; lines that are not a JSON object (a write torn by a kill,
    an edit) are skipped with a note on stderr."""
    records, bad = parse_metrics(path)
    if bad:
        context = f" while {what}" if what else ""
        print(f"note: skipped {bad} unreadable line(s) in {path}{context} (a write cut short?)", file=sys.stderr)
    return records


def parse_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(the records of a metrics.jsonl, how many lines were not a JSON object)."""
    records, bad = [], 0
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad


def print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
