"""Does a bf16 run's validation BPB follow the fp32 run's? The same training twice, one precision each.

Both runs go through `stlm.api.train` (what `stlm train` calls) with the same
model, seed, data order and steps on the built-in pydocs corpus; only
`runtime.precision` differs (fp32, then bf16 autocast: matmuls in bf16, the
fp32 master weights, norms and loss as the trainer keeps them). Validation BPB
is measured every `--eval-every` steps on the same held-out windows. A third
run, fp32 with another seed (other initial weights and data order), is the
yardstick: how far two fp32 runs that differ only by chance drift apart.
Printed: the curves side by side, bf16 - fp32 and fp32(other seed) - fp32 at
each point, and the largest |difference| of each; a PNG of the curves is
written (default docs/img/bf16-follows-fp32.png).

bf16 is emulated (slow) on a CPU without AMX, so the defaults are small: a few
minutes for both runs on 2 cores.

    flock /work/heavy.lock .venv/bin/python bench/bf16_follows_fp32.py
    .venv/bin/python bench/bf16_follows_fp32.py --steps 40 --eval-every 10 --plot /tmp/b.png   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")
REFERENCE = "fp32, other seed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="decoder-tiny")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--eval-tokens", type=int, default=16384, help="validation ids scored at each evaluation")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-seed", type=int, default=1, help="the yardstick fp32 run's seed; -1: no yardstick")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=None, help="token cache (default: a temporary folder)")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "bf16-follows-fp32.png")
    parser.add_argument("--json", type=Path, help="also write the curves here")
    args = parser.parse_args()

    import stlm
    from stlm.config import DataConfig, OptimConfig, RunConfig, RuntimeConfig, TrainConfig
    from stlm.training.logging import read_metrics

    curves: dict[str, dict[int, float]] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="stlm-bf16-") as tmp:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        runs = [(p, p, args.seed) for p in PRECISIONS]
        if args.reference_seed >= 0:
            runs.append((REFERENCE, "fp32", args.reference_seed))
        for name, precision, seed in runs:
            config = RunConfig(
                model=args.model,
                data=DataConfig(source="pydocs", seq_len=args.seq_len, cache_dir=cache),
                optim=OptimConfig(lr=args.lr),
                train=TrainConfig(
                    steps=args.steps,
                    batch_size=args.batch_size,
                    seed=seed,
                    eval_every=args.eval_every,
                    eval_tokens=args.eval_tokens,
                    save_every=0,
                    log_every=args.eval_every,
                ),
                runtime=RuntimeConfig(device="cpu", precision=precision, threads=args.threads),
            )
            run_dir = Path(tmp) / f"{precision}-seed{seed}"
            t0 = time.perf_counter()
            stlm.train(config, run_dir, progress=False)
            seconds[name] = time.perf_counter() - t0
            records = read_metrics(run_dir / "metrics.jsonl")
            curves[name] = {int(r["step"]): float(r["val_bpb"]) for r in records if "val_bpb" in r}
            print(f"{name} (seed {seed}): {args.steps} steps in {seconds[name]:.0f} s", flush=True)

    steps = sorted(set.intersection(*(set(c) for c in curves.values())))
    print(
        f"\n{args.model}, pydocs, {args.steps} steps of {args.batch_size} x {args.seq_len}, lr {args.lr}, "
        f"seed {args.seed}, {args.threads} threads; validation BPB on {args.eval_tokens} ids\n"
    )
    others = [n for n in curves if n != "fp32"]
    print(f"{'step':>6}" + "".join(f"{n:>18}" for n in curves) + "".join(f"{n + ' - fp32':>25}" for n in others))
    for s in steps:
        values = "".join(f"{c[s]:>18.4f}" for c in curves.values())
        print(f"{s:>6}{values}" + "".join(f"{curves[n][s] - curves['fp32'][s]:>+25.4f}" for n in others))
    worst = {n: max(abs(curves[n][s] - curves["fp32"][s]) for s in steps) for n in others}
    second_half = [s for s in steps if s >= steps[len(steps) // 2]]
    late = {n: max(abs(curves[n][s] - curves["fp32"][s]) for s in second_half) for n in others}
    print()
    for n in others:
        print(f"max |{n} - fp32| = {worst[n]:.4f} BPB; over the second half of training {late[n]:.4f}")
    print("final: " + ", ".join(f"{n} {c[steps[-1]]:.4f}" for n, c in curves.items()))
    print("time: " + ", ".join(f"{n} {t:.0f} s" for n, t in seconds.items()) + " (bf16 emulated without AMX)")

    _plot(args, steps, curves, worst["bf16"])
    if args.json:
        result = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "curves": {p: {str(s): v for s, v in c.items()} for p, c in curves.items()},
            "max_abs_diff": worst,
            "max_abs_diff_second_half": late,
            "seconds": seconds,
        }
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


def _plot(args: argparse.Namespace, steps: list[int], curves: dict[str, dict[int, float]], worst: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, style in zip(curves, ("o-", "s--", ":")):
        color = "0.55" if name == REFERENCE else None
        ax.plot(steps, [curves[name][s] for s in steps], style, ms=4, lw=1.5, color=color, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("validation bits per byte")
    ax.set_title(f"{args.model} on pydocs: bf16 autocast vs fp32 (max |diff| {worst:.4f})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
