"""The table of bench/mtpkd_measure.sh: held-out BPB, steps and wall-clock of each run, and the speculative bench."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from stlm import api


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/mtpkd")
    print("| run | params | steps | train s | pydocs val BPB | WikiText-2 BPB |")
    print("|---|---:|---:|---:|---:|---:|")
    for run in ("plain", "mtp4", "mtp4-eqtime", "teacher", "kd"):
        folder = root / run
        if not (folder / "metrics.jsonl").is_file():
            continue
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        steps = max(r["step"] for r in rows)
        elapsed = max(r.get("elapsed_s", 0) for r in rows)
        scores = []
        for task in ("val", "wikitext2"):
            path = root / f"evals-{run}" / f"{task}.json"
            value = json.loads(path.read_text())["metrics"]["bits_per_byte"] if path.is_file() else None
            scores.append("-" if value is None else f"{value:.4f}")
        params = f"{api.load(folder).module.num_params():,}"
        print(f"| {run} | {params} | {steps} | {elapsed:.0f} | {scores[0]} | {scores[1]} |")
    spec = root / "speculative.json"
    if spec.is_file():
        s = json.loads(spec.read_text())
        print(
            f"\nspeculative (mtp4, {s['max_new']} new bytes x {len(s['rows'])} prompts, median of {s['repeats']}): "
            f"plain {s['plain_s']:.3f} s, speculative {s['speculative_s']:.3f} s, speedup {s['speedup']:.2f}x, "
            f"mean accepted length {s['mean_accepted']:.2f}, drafts accepted {s['acceptance']:.1%}, "
            f"identical {s['identical']}"
        )


if __name__ == "__main__":
    main()
