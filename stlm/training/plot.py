"""Loss and throughput curves of a run, drawn to PNG from its metrics.jsonl.

Each quantity keeps its own unit on its own axis, so no two curves in
different units are read against one scale:

    loss            training loss (and validation loss, encoder-decoders) in nats per token
    bits per byte   validation BPB, with the reference lines (uniform, unigram) in the same unit
    throughput      tokens/s and bytes/s; MFU on the right-hand axis

Loss per token and bits per byte differ by ln 2 and by bytes per token (1 for
byte models, ~4 for BPE), which is why they are not overlaid. MFU is
tokens/s x FLOPs per token / peak, a rescaling of the tokens/s curve, so it is
drawn as a second scale of that curve, not as a curve of its own, whenever the
run kept one FLOP count and one peak throughout (else as its own curve).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from stlm.errors import UserError
from stlm.training.logging import parse_metrics

LOSS_UNIT = "nats per token"
BPB_UNIT = "bits per byte"


def plot_run(run_dir: str | Path, out: str | Path | None = None, *, baselines: dict[str, float] | None = None) -> Path:
    """Draw the run's curves (see the module docstring) to `out`, default RUN/loss.png.

    `baselines`: label -> bits per byte, drawn as labelled horizontal lines on the BPB panel.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl; is it a run directory?")
    records, bad = parse_metrics(metrics_path)
    if not any("loss" in r for r in records):
        unreadable = f" ({bad} unreadable line(s) skipped)" if bad else ""
        raise UserError(f"{metrics_path} holds no training records yet{unreadable}")
    if bad:
        print(f"note: skipped {bad} unreadable line(s) in {metrics_path} (a write cut short?)", file=sys.stderr)
    fig = draw_run(records, title=run_dir.name, baselines=baselines)
    out = Path(out) if out else run_dir / "loss.png"
    if out.is_dir():
        raise UserError(f"{out} is a folder; name the PNG to write, e.g. {out / 'curves.png'}")
    if not out.suffix:  # matplotlib would add ".png" itself, and the path returned would not name the file
        out = out.with_name(out.name + ".png")
    try:
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    import matplotlib.pyplot as plt  # draw_run chose the file-only backend first

    plt.close(fig)
    return out


def draw_run(records: list[dict[str, Any]], *, title: str = "", baselines: dict[str, float] | None = None):
    """The figure of `plot_run` from metrics records; a panel only for what the records hold."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    def series(key: str, scale: float = 1.0) -> list[tuple[int, float]]:
        return [(r["step"], scale * r[key]) for r in records if r.get(key) is not None]

    train, val_loss, val_bpb = series("loss"), series("val_loss"), series("val_bpb")
    tokens, speed, mfu = series("tokens_per_s"), series("bytes_per_s"), series("mfu", 100.0)
    baselines = dict(baselines or {})
    panels = ["loss"] + (["bpb"] if val_bpb or baselines else []) + (["speed"] if tokens else [])
    heights = {"loss": 3, "bpb": 3, "speed": 2}
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(7, 2.2 * len(panels) + 1),
        height_ratios=[heights[p] for p in panels],
        sharex=True,
        squeeze=False,
    )
    ax = dict(zip(panels, axes[:, 0]))

    ax["loss"].plot(*zip(*train), lw=1.2, color="C0", label="train loss")
    if val_loss:
        ax["loss"].plot(*zip(*val_loss), "o-", lw=1.5, color="C1", label="validation loss")
    ax["loss"].set_ylabel(f"loss ({LOSS_UNIT})")
    ax["loss"].set_title(title)

    if "bpb" in ax:
        a = ax["bpb"]
        if val_bpb:
            a.plot(*zip(*val_bpb), "o-", lw=1.5, color="C1", label="validation BPB")
        for i, (name, value) in enumerate(baselines.items()):
            # Horizontal lines count in the y-limits, so every reference stays on the panel.
            a.axhline(value, ls="--", lw=1, color=f"C{i + 2}", label=f"{name} ({value:.2f})")
        a.set_ylabel(BPB_UNIT)

    if "speed" in ax:
        a = ax["speed"]
        a.plot(*zip(*tokens), lw=1, color="C7", label="tokens/s")
        # Byte models read one byte per token: one curve would hide the other, so draw one and say so.
        if speed and not _same(tokens, speed):
            a.plot(*zip(*speed), lw=1, color="C8", ls="--", label="bytes/s")
        elif speed:
            a.lines[-1].set_label("tokens/s = bytes/s")
        a.set_ylabel("per second")
        a.legend(loc="best", fontsize="small")
        if mfu:
            _mfu_axis(a, tokens, mfu)
    for a in ax.values():
        a.grid(alpha=0.3)
    for name in ("loss", "bpb"):
        if name in ax:
            ax[name].legend(fontsize="small")
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    return fig


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    """Two curves that coincide to within 1% at every step."""
    return len(a) == len(b) and all(
        sa == sb and abs(va - vb) <= 0.01 * max(abs(va), 1e-9) for (sa, va), (sb, vb) in zip(a, b)
    )


def _mfu_axis(ax, tokens: list[tuple[int, float]], mfu: list[tuple[int, float]]) -> None:
    """MFU % on the right: a second scale of the tokens/s curve, or its own curve if the ratio changed."""
    by_step = dict(tokens)
    ratios = [m / by_step[s] for s, m in mfu if by_step.get(s)]
    if ratios and max(ratios) - min(ratios) <= 1e-6 * max(ratios):
        k = ratios[0]  # MFU % per token/s
        right = ax.secondary_yaxis("right", functions=(lambda x: x * k, lambda y: y / k))
        right.set_ylabel("MFU % (same curve)", color="C7")
        return
    twin = ax.twinx()  # a resumed run on another device or precision: MFU is not a rescaling any more
    twin.plot(*zip(*mfu), lw=1, color="C3", ls=":", label="MFU")
    twin.set_ylabel("MFU %", color="C3")
    handles, labels = ax.get_legend_handles_labels()
    extra, extra_labels = twin.get_legend_handles_labels()
    ax.legend(handles + extra, labels + extra_labels, loc="best", fontsize="small")
