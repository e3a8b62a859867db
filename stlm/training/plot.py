"""Loss and throughput curves of a run, drawn to PNG from its metrics.jsonl."""

from __future__ import annotations

import math
from pathlib import Path

from stlm.errors import UserError
from stlm.training.logging import read_metrics


def plot_run(run_dir: str | Path, out: str | Path | None = None, *, baselines: dict[str, float] | None = None) -> Path:
    """Draw training loss (bits per token) and validation BPB, then throughput (and MFU), against step.

    Validation is BPB for decoders and loss for encoder-decoders; throughput is
    tokens/s (bytes/s too when the data is bytes), with MFU on a second axis
    for runs that recorded it.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl; is it a run directory?")
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"] / math.log(2)) for r in records if "loss" in r]
    val = [(r["step"], r["val_bpb"]) for r in records if "val_bpb" in r]
    val_loss = [(r["step"], r["val_loss"] / math.log(2)) for r in records if "val_loss" in r]
    speed = [(r["step"], r["bytes_per_s"]) for r in records if r.get("bytes_per_s")]
    tokens = [(r["step"], r["tokens_per_s"]) for r in records if "tokens_per_s" in r]
    mfu = [(r["step"], 100 * r["mfu"]) for r in records if r.get("mfu") is not None]
    if not train:
        raise UserError(f"{metrics_path} holds no training records yet")

    fig, (ax, ax_speed) = plt.subplots(2, 1, figsize=(7, 6), height_ratios=(3, 1), sharex=True)
    ax.plot(*zip(*train), label="train loss (bits/token)", lw=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="validation BPB", lw=1.5)
    if val_loss:
        ax.plot(*zip(*val_loss), "o-", label="validation loss (bits/token)", lw=1.5)
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, ls="--", lw=1, color=f"C{i + 2}", label=f"{name} ({value:.2f})")
    ax.set_ylabel("bits")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    if tokens:
        ax_speed.plot(*zip(*tokens), lw=1, color="C7", label="tokens/s")
    if speed:
        ax_speed.plot(*zip(*speed), lw=1, color="C8", ls="--", label="bytes/s")
    ax_speed.set_ylabel("per second")
    ax_speed.legend(loc="lower left", fontsize="small")
    if mfu:
        ax_mfu = ax_speed.twinx()
        ax_mfu.plot(*zip(*mfu), lw=1, color="C3", label="MFU")
        ax_mfu.set_ylabel("MFU %", color="C3")
    ax_speed.set_xlabel("step")
    ax_speed.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "loss.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
