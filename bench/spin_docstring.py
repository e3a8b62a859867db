"""SPIN on docstring-summary: ROUGE-L per iteration beside the SFT start and continued SFT for the same wall-clock.

Stages, each a plain `stlm` command (printed before it runs), each skipped when its
results are already there, so the bench runs in short pieces (`--stage`):

    sft       stlm finetune --model t5-debug --task docstring-summary --steps 600 --lr 3e-3 ... --out OUT/sft
    spin      stlm spin OUT/sft --iterations 3 --steps 32 --prompts 256 --eval-examples 200 --out OUT/spin
    more-sft  stlm finetune --model OUT/sft/best --steps N ... --out OUT/more-sft, N chosen so that it
              takes SPIN's wall-clock (N = SPIN's seconds / the SFT run's median seconds per step),
              validated 3 times (after each third, as SPIN after each iteration)
    report    the table: validation ROUGE-L (the same 200 validation examples everywhere: both
              commands draw them with the same seed), implicit-reward accuracy per iteration

    .venv/bin/python bench/spin_docstring.py --out runs/bench-spin            # every stage
    .venv/bin/python bench/spin_docstring.py --out runs/bench-spin --stage spin
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: bench/ is a package of the repository

from bench.run_records import records, seconds_per_step  # noqa: E402

STAGES = ("sft", "spin", "more-sft", "report")


def stlm(*args: str) -> float:
    """Run `python -m stlm ARGS`; returns its wall-clock seconds. A SIGTERM (a `timeout` around this
    script) is passed on, so the command stops at a step boundary with a checkpoint."""
    cmd = [sys.executable, "-m", "stlm", *args]
    print("$ stlm " + " ".join(args), flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    if proc.wait() != 0:
        raise SystemExit(f"stlm {args[0]} failed (exit {proc.returncode})")
    return time.perf_counter() - start


def finished(run: Path) -> None:
    """Go on only when the stage's run is complete; else say how to continue."""
    if not (run / "results.json").exists():
        raise SystemExit(f"{run} stopped before its end; rerun this script to continue it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-spin"))
    parser.add_argument("--stage", choices=STAGES, action="append", help="stages to run (default: all)")
    parser.add_argument("--model", default="t5-debug")
    parser.add_argument("--sft-steps", type=int, default=600)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--steps", type=int, default=32, help="SPIN steps per iteration")
    parser.add_argument("--prompts", type=int, default=256, help="training prompts the opponent answers per iteration")
    parser.add_argument("--eval-examples", type=int, default=200)
    parser.add_argument("--beta", type=float, default=0.1)
    args = parser.parse_args()
    stages = args.stage or STAGES
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    timing = out / "timing.json"
    times = json.loads(timing.read_text()) if timing.exists() else {}
    common = ["--device", "cpu", "--threads", "1", "--quiet"]  # one thread: a tiny model on a shared CPU

    if "sft" in stages and not (out / "sft" / "results.json").exists():
        times["sft"] = stlm(
            "finetune", "--model", args.model, "--task", "docstring-summary", "--steps", str(args.sft_steps),
            "--lr", "3e-3", "--eval-every", "200", "--patience", "0", "--no-score-initial", "--out", str(out / "sft"), *common,
        )  # fmt: skip
    if "spin" in stages and not (out / "spin" / "results.json").exists():
        resume = ["--resume", str(out / "spin")] if (out / "spin" / "config.json").exists() else None
        argv = resume or [
            str(out / "sft"), "--iterations", str(args.iterations), "--steps", str(args.steps),
            "--prompts", str(args.prompts), "--eval-examples", str(args.eval_examples), "--beta", str(args.beta),
            "--out", str(out / "spin"),
        ]  # fmt: skip
        times["spin"] = times.get("spin", 0.0) * bool(resume) + stlm("spin", *argv, *common)
    timing.write_text(json.dumps(times, indent=1))
    finished(out / "sft")
    finished(out / "spin")
    if "more-sft" in stages and not (out / "more-sft" / "results.json").exists():
        per_step = seconds_per_step(out / "sft")
        n = max(3, round(times["spin"] / per_step / 3) * 3)
        print(f"SPIN took {times['spin']:.0f} s; SFT runs {per_step:.3f} s/step: {n} steps of continued SFT")
        times["more-sft"] = stlm(
            "finetune", "--model", str(out / "sft" / "best"), "--task", "docstring-summary", "--steps", str(n),
            "--eval-every", str(n // 3), "--eval-examples", str(args.eval_examples), "--patience", "0",
            "--warmup", "0", "--no-score-initial", "--out", str(out / "more-sft"), *common,
        )  # fmt: skip
        times["more-sft-steps"] = n
        timing.write_text(json.dumps(times, indent=1))
        finished(out / "more-sft")
    if "report" in stages:
        report(out, times)


def report(out: Path, times: dict) -> None:
    spin = json.loads((out / "spin" / "results.json").read_text())["iterations"]
    more = [r for r in records(out / "more-sft") if "val_rougeL" in r] if (out / "more-sft").exists() else []
    print(f"\nvalidation ROUGE-L ({spin[0]['val_examples']} examples), wall-clock on this machine")
    print("| model | ROUGE-L | ROUGE-1 | implicit-reward acc. (train / val) | opponent answer = gold |")
    print("|---|---|---|---|---|")
    print(f"| SFT start | {spin[0]['val_rougeL']:.4f} | {spin[0]['val_rouge1']:.4f} | - | - |")
    for row in spin[1:]:
        print(
            f"| SPIN iteration {row['iteration']} | {row['val_rougeL']:.4f} | {row['val_rouge1']:.4f} | "
            f"{row['train_reward_accuracy']:.3f} / {row['val_reward_accuracy']:.3f} | {row['val_opponent_exact']:.3f} |"
        )
    for i, row in enumerate(more, 1):
        print(
            f"| continued SFT, {i}/3 of the time (step {row['step']}) | {row['val_rougeL']:.4f} | {row['val_rouge1']:.4f} | - | - |"
        )
    print(f"\nseconds: {json.dumps(times)}")


if __name__ == "__main__":
    main()
