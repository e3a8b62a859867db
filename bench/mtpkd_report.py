"""The tables and the learning-curve plot of bench/mtpkd_measure.sh.

    python bench/mtpkd_report.py RUNS_DIR [--png docs/img/mtpkd-curves.png]

Per run: parameters, steps, training wall-clock (metrics.jsonl), held-out BPB (the pydocs validation split and
WikiText-2, from `stlm evaluate`); then each speculative bench. The plot draws the in-training validation BPB
(every half epoch) against steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stlm import api

RUNS = {
    "plain": "plain next-token (decoder-tiny)",
    "mtp4": "mtp:4, equal steps",
    "mtp4-eqtime": "mtp:4, plain's wall-clock",
    "mtp2": "mtp:2, equal steps",
    "teacher": "teacher (d=192 x 4)",
    "kd": "distilled decoder-tiny (alpha 0.5, T 2)",
    "plain-kdtime": "plain, the distilled run's wall-clock",
}


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]


def curve(rows: list[dict]) -> tuple[list[int], list[float]]:
    """(steps, val BPB) of the in-training evaluations."""
    points = [(r["step"], r["val_bpb"]) for r in rows if "val_bpb" in r]
    return [p[0] for p in points], [p[1] for p in points]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, nargs="?", default=Path("runs/mtpkd"))
    p.add_argument("--png", type=Path, help="write the learning curves here")
    args = p.parse_args()
    root = args.root
    print("| run | params | steps | train s | pydocs val BPB | WikiText-2 BPB |")
    print("|---|---:|---:|---:|---:|---:|")
    curves = {}
    for run, label in RUNS.items():
        folder = root / run
        if not (folder / "metrics.jsonl").is_file():
            continue
        rows = metrics(folder)
        curves[run] = curve(rows)
        steps = max(r["step"] for r in rows)
        elapsed = max(r.get("elapsed_s", 0) for r in rows)
        scores = []
        for task in ("val", "wikitext2"):
            path = root / f"evals-{run}" / f"{task}.json"
            value = json.loads(path.read_text())["metrics"]["bits_per_byte"] if path.is_file() else None
            scores.append("-" if value is None else f"{value:.4f}")
        params = f"{api.load(folder).module.num_params():,}" if (folder / "report.md").is_file() else "-"
        print(f"| {label} | {params} | {steps} | {elapsed:.0f} | {scores[0]} | {scores[1]} |")
    for name in ("speculative.json", "speculative-mtp2.json"):
        spec = root / name
        if spec.is_file():
            s = json.loads(spec.read_text())
            print(
                f"\n{name} ({Path(s['run']).name}, {s['max_new']} new bytes x {len(s['rows'])} prompts, median of "
                f"{s['repeats']}, {s['threads']} thread(s)): plain {s['plain_s']:.3f} s, speculative "
                f"{s['speculative_s']:.3f} s, speedup {s['speedup']:.2f}x, mean accepted length "
                f"{s['mean_accepted']:.2f}, drafts accepted {s['acceptance']:.1%}, identical {s['identical']}"
            )
    if args.png and curves:
        plot(curves, args.png)
        print(f"\nplot: {args.png}")


def plot(curves: dict[str, tuple[list[int], list[float]]], png: Path) -> None:
    """Validation BPB against steps (wall-clock is in the table: the runs shared the cores differently)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for run, (steps, bpb) in curves.items():
        if bpb:
            ax.plot(steps, bpb, marker=".", label=RUNS[run])
    ax.set_xlabel("step (1,150 steps = one pydocs epoch of 8 x 256 bytes)")
    ax.set_ylabel("pydocs validation BPB (next byte, in training)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("decoder-tiny on pydocs: next-token, multi-token prediction, distillation", fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
