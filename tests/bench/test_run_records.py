"""bench/run_records.py: a run's step time is the median of its logged intervals, warm-up left out."""

from __future__ import annotations

import json

import pytest

from bench.run_records import records, seconds_per_step


def _write(run, rows):
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")


def test_step_time_is_the_median_interval_after_the_first(tmp_path):
    # intervals of 10 steps: 50 s (warm-up), then 10, 12, 11 s; a validation record has no loss
    elapsed = [0, 50, 60, 72, 83]
    rows = [{"step": 10 * (i + 1), "loss": 1.0, "elapsed_s": e} for i, e in enumerate(elapsed)]
    rows.insert(3, {"step": 30, "val_bpb": 2.0})
    _write(tmp_path / "run", rows)
    assert len(records(tmp_path / "run")) == 6
    assert seconds_per_step(tmp_path / "run") == pytest.approx(1.1)
    _write(tmp_path / "short", rows[:2])  # one interval: it is all there is
    assert seconds_per_step(tmp_path / "short") == pytest.approx(5.0)
    _write(tmp_path / "none", rows[:1])
    with pytest.raises(SystemExit, match="too few training records"):
        seconds_per_step(tmp_path / "none")
