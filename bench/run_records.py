"""What a finished stlm run logged: its metrics.jsonl records and its measured seconds per step."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def records(run: Path) -> list[dict]:
    """The run's metrics.jsonl, one dict per line."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def seconds_per_step(run: Path) -> float:
    """Median seconds per step between consecutive training records (robust to the validations between
    some), the first interval (warm-up) left out when there are others."""
    rows = [r for r in records(run) if "loss" in r and "elapsed_s" in r]
    rates = [(b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]) for a, b in zip(rows, rows[1:])]
    if not rates:
        raise SystemExit(f"{run}: too few training records to time a step; run it for more steps")
    return statistics.median(rates[1:] or rates)
