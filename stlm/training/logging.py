"""What a run says about itself: a header at the top, metrics as JSON lines."""

from __future__ import annotations

import json
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
    """Append-only JSONL metrics; on resume, records past the resumed step are dropped."""

    def __init__(self, path: Path, *, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines() if _step(line) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62  # drop unreadable lines


def read_metrics(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
