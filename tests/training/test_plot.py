"""The loss plot: each quantity in its labelled unit, every curve drawn and in a legend."""

from __future__ import annotations

import json

import pytest

from stlm.errors import UserError
from stlm.training.plot import draw_run, plot_run


def byte_run() -> list[dict]:
    """A byte model's records: tokens/s equal bytes/s, MFU a fixed multiple of tokens/s."""
    records = []
    for step in range(10, 110, 10):
        speed = 1000.0 + 7 * step
        records.append(
            {"step": step, "loss": 4.0 - step / 50, "tokens_per_s": speed, "bytes_per_s": speed, "mfu": speed * 2e-5}
        )
        if step % 50 == 0:
            records.append({"step": step, "val_bpb": 5.0 - step / 40, "val_bytes": 4096})
    return records


def token_run() -> list[dict]:
    """An encoder-decoder's records: ~4 bytes per token, validation loss, MFU resumed on another device."""
    records = []
    for step in range(10, 110, 10):
        speed = 500.0 + step
        mfu = speed * (1e-4 if step <= 50 else 3e-4)
        records.append(
            {"step": step, "loss": 9.0 - step / 20, "tokens_per_s": speed, "bytes_per_s": 3.9 * speed, "mfu": mfu}
        )
        if step % 50 == 0:
            records.append({"step": step, "val_loss": 8.0 - step / 25, "val_tokens": 512})
    return records


def panels(fig) -> dict[str, object]:
    """The figure's main axes by their y label (secondary and twin axes are reached from them)."""
    return {ax.get_ylabel(): ax for ax in fig.axes if ax.get_ylabel() and ax.get_legend() is not None}


def legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_byte_run_keeps_loss_and_bits_per_byte_apart_in_labelled_units():
    records = byte_run()
    fig = draw_run(records, title="run", baselines={"order-0 (unigram)": 4.77, "uniform": 8.0})
    axes = panels(fig)
    assert set(axes) == {"loss (nats per token)", "bits per byte", "per second"}
    loss, bpb, speed = axes["loss (nats per token)"], axes["bits per byte"], axes["per second"]

    assert legend(loss) == ["train loss"]
    # The loss is drawn as logged (nats per token), not converted into another unit.
    assert list(loss.lines[0].get_ydata()) == [r["loss"] for r in records if "loss" in r]
    assert legend(bpb) == ["validation BPB", "order-0 (unigram) (4.77)", "uniform (8.00)"]
    assert list(bpb.lines[0].get_ydata()) == [r["val_bpb"] for r in records if "val_bpb" in r]
    low, high = bpb.get_ylim()
    assert low < 2.5 and high > 8.0  # every reference line and the whole validation curve are on the panel

    # One byte per token: one curve, said so; MFU is a second scale of it, labelled on the right.
    assert legend(speed) == ["tokens/s = bytes/s"] and len(speed.lines) == 1
    assert [a.get_ylabel() for a in speed.child_axes] == ["MFU % (same curve)"]
    assert speed.get_xlabel() == "step"  # the bottom panel; the others share its steps


def test_token_run_draws_every_series_with_a_legend_entry():
    records = token_run()
    fig = draw_run(records, title="t5")
    axes = panels(fig)
    assert set(axes) == {"loss (nats per token)", "per second"}  # no bits-per-byte data, no empty panel
    assert legend(axes["loss (nats per token)"]) == ["train loss", "validation loss"]
    assert list(axes["loss (nats per token)"].lines[1].get_ydata()) == [
        r["val_loss"] for r in records if "val_loss" in r
    ]
    # Tokens/s and bytes/s differ: both drawn; MFU changed its ratio to tokens/s (resumed elsewhere): its own curve.
    speed = axes["per second"]
    assert legend(speed) == ["tokens/s", "bytes/s", "MFU"]
    twin = next(a for a in fig.axes if a.get_ylabel() == "MFU %")
    assert list(twin.lines[0].get_ydata()) == [100 * r["mfu"] for r in records if "mfu" in r]


def test_plot_run_writes_a_png_and_refuses_a_run_without_training_records(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in byte_run()), encoding="utf-8")
    out = plot_run(tmp_path, baselines={"uniform": 8.0})
    assert out == tmp_path / "loss.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 5, "val_bpb": 3.0}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="no training records"):
        plot_run(tmp_path)
    with pytest.raises(UserError, match="no metrics.jsonl"):
        plot_run(tmp_path / "nowhere")
