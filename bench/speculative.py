"""Self-speculative decoding against plain greedy on an mtp:K checkpoint: same text, time, accepted length.

    python bench/speculative.py RUN [--max-new 128] [--repeats 5] [--json OUT]

For each prompt: one warm-up of each, then `repeats` timed runs alternating
plain greedy and speculative (so machine noise hits both alike); the median
of each is kept. Prints one row per prompt and the totals side by side; the
outputs must be identical (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from stlm import api

PROMPTS = [
    "The ",
    "Return the number of ",
    "This module provides ",
    "If the argument is ",
    "def ",
    "A list is ",
    "Raises ValueError if ",
    "The following example ",
]


def timed(fn) -> tuple[float, str]:
    t0 = time.perf_counter()
    text = fn()
    return time.perf_counter() - t0, text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--max-new", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = api.load(args.run, device="cpu")
    rows, same = [], True
    for prompt in PROMPTS:
        plain = lambda: model.generate(prompt, max_new_tokens=args.max_new, greedy=True)  # noqa: E731
        fast = lambda: model.generate(prompt, max_new_tokens=args.max_new, speculative=True)  # noqa: E731
        plain(), fast()  # warm-up
        t_plain, t_fast = [], []
        for _ in range(args.repeats):
            dt, a = timed(plain)
            t_plain.append(dt)
            dt, b = timed(fast)
            t_fast.append(dt)
            same &= a == b
        stats = model.speculative_stats
        rows.append(
            {
                "prompt": prompt,
                "bytes": len(b.encode("utf-8")),
                "plain_s": statistics.median(t_plain),
                "speculative_s": statistics.median(t_fast),
                "mean_accepted": stats.mean_accepted,
                "accepted": stats.accepted,
                "drafted": stats.drafted,
                "identical": a == b,
            }
        )
    total_plain = sum(r["plain_s"] for r in rows)
    total_fast = sum(r["speculative_s"] for r in rows)
    emitted = sum(r["bytes"] for r in rows)
    summary = {
        "run": str(args.run),
        "max_new": args.max_new,
        "repeats": args.repeats,
        "threads": args.threads,
        "identical": same,
        "plain_s": total_plain,
        "speculative_s": total_fast,
        "speedup": total_plain / total_fast,
        "mean_accepted": statistics.mean(r["mean_accepted"] for r in rows),
        "acceptance": sum(r["accepted"] for r in rows) / max(1, sum(r["drafted"] for r in rows)),
        "rows": rows,
    }
    print(f"{'prompt':<26} {'plain s':>8} {'spec s':>8} {'speedup':>8} {'accepted/round':>15} {'same':>5}")
    for r in rows:
        print(
            f"{r['prompt']!r:<26} {r['plain_s']:8.3f} {r['speculative_s']:8.3f} "
            f"{r['plain_s'] / r['speculative_s']:7.2f}x {r['mean_accepted']:15.2f} {r['identical']!s:>5}"
        )
    print(
        f"total ({emitted} bytes): plain {total_plain:.3f} s, speculative {total_fast:.3f} s, "
        f"speedup {summary['speedup']:.2f}x, mean accepted length {summary['mean_accepted']:.2f}, "
        f"drafts accepted {summary['acceptance']:.1%}, identical output: {same}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
