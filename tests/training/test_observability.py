"""Counted FLOPs, MFU, the run header, speed fields in metrics, `stlm plot`, TensorBoard."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from stlm import registry
from stlm.cli.main import main
from stlm.objectives.next_token import model_loss
from stlm.training.flops import count_flops, matmul_peak, mfu, training_step_flops
from stlm.training.monitor import RunMonitor


def test_flops_of_a_linear_layer_forward_and_backward() -> None:
    b, d, f = 6, 16, 24
    layer = torch.nn.Linear(d, f, bias=False)
    x = torch.randn(b, d, requires_grad=True)
    # forward 2bdf; backward: input gradient 2bdf + weight gradient 2bdf
    assert count_flops(lambda: layer(x).sum().backward()) == 6 * b * d * f
    x_no_grad = torch.randn(b, d)
    assert count_flops(lambda: layer(x_no_grad).sum().backward()) == 4 * b * d * f


def test_decoder_step_flops_equal_6n_plus_attention() -> None:
    family, cfg = registry.get_config("decoder-tiny")
    model = registry.build_model(family, cfg)
    b, t = 2, 32
    window = torch.zeros(b, t + 1, dtype=torch.long)
    counted = training_step_flops(model, model_loss, (window,), build_meta=lambda: registry.build_model(family, cfg))
    d, f, v, layers = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.n_layers
    matmul_params = layers * (4 * d * d + 3 * d * f) + v * d  # the embedding lookup is no matmul; the head is
    attention = 3 * layers * 4 * b * t * t * d  # QK^T and AV, forward once and backward twice
    assert counted == 6 * matmul_params * b * t + attention
    assert all(p.grad is None for p in model.parameters())  # counted on a meta copy: the real model untouched


def test_real_device_fallback_counts_and_clears_gradients() -> None:
    layer = torch.nn.Linear(4, 4, bias=False)
    flops = training_step_flops(layer, lambda m, x: m(x).sum(), (torch.randn(3, 4),))
    assert flops == 4 * 3 * 4 * 4 and layer.weight.grad is None


def test_mfu_and_peak() -> None:
    assert mfu(50e9, 200e9) == 0.25
    peak = matmul_peak(torch.device("cpu"), size=128, repeats=2)
    assert peak > 1e6  # any real CPU does more than a megaflop per second
    monitor = RunMonitor(device=torch.device("cpu"), flops_per_token=1e6, peak_flops=1e9, total_steps=10, start_step=0)
    record = monitor.enrich({"step": 5, "tokens_per_s": 100.0, "bytes_per_s": 90.0})
    assert record["flops_per_s"] == 1e8 and record["mfu"] == pytest.approx(0.1)
    assert record["peak_mem_mib"] > 0 and record["eta_s"] >= 0
    assert set(monitor.postfix(record)) == {"tok/s", "B/s", "MFU", "mem"}


def test_run_records_header_and_speed_fields(tiny_run: Path) -> None:
    header = json.loads((tiny_run / "config.json").read_text())["header"]
    assert header["threads"] >= 1 and header["versions"]["torch"] == torch.__version__
    assert header["matmul_peak"]["precision"] == "fp32" and header["matmul_peak"]["flops_per_s"] > 0
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert train and all({"mfu", "flops_per_s", "peak_mem_mib", "eta_s", "tokens_per_s"} <= set(r) for r in train)
    assert 0 < train[-1]["mfu"] < 1 and train[-1]["eta_s"] == 0


def test_stlm_plot_writes_a_png(tiny_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "curves.png"
    assert main(["plot", str(tiny_run), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(tmp_path)]) == 2  # not a run directory: one-line error
    assert "has no metrics.jsonl" in capsys.readouterr().err


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None,
    reason="tensorboard is not installed (pip install stlm[tensorboard])",
)
def test_tensorboard_option_writes_event_files(tmp_path: Path) -> None:
    monitor = RunMonitor(
        device=torch.device("cpu"),
        flops_per_token=1.0,
        peak_flops=1.0,
        total_steps=2,
        start_step=0,
        tensorboard_dir=tmp_path / "tb",
    )
    monitor.write(monitor.enrich({"step": 1, "loss": 2.0, "tokens_per_s": 10.0}))
    monitor.write({"step": 2, "val_bpb": 1.5})
    monitor.close()
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_tensorboard_missing_is_a_user_error(monkeypatch, tmp_path: Path) -> None:
    import sys

    from stlm.errors import UserError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UserError, match=r"pip install stlm\[tensorboard\]"):
        RunMonitor(
            device=torch.device("cpu"),
            flops_per_token=1.0,
            peak_flops=1.0,
            total_steps=1,
            start_step=0,
            tensorboard_dir=tmp_path / "tb",
        )


def test_matmul_peak_is_the_best_of_now_and_this_machines_cached_figure(tmp_path: Path) -> None:
    from stlm.training.monitor import device_peak

    cpu, cache = torch.device("cpu"), tmp_path / "matmul_peak.json"
    first = device_peak(cpu, "fp32", cache_file=cache, measure=lambda: 100e9, today="2025-01-02")
    assert (first.flops_per_s, first.source) == (100e9, "measured now")
    busy = device_peak(cpu, "fp32", cache_file=cache, measure=lambda: 60e9, today="2025-01-03")
    assert busy.flops_per_s == 100e9 and busy.source == "cached from 2025-01-02; measured now 60 GFLOP/s"
    faster = device_peak(cpu, "fp32", cache_file=cache, measure=lambda: 150e9, today="2025-01-04")
    assert (faster.flops_per_s, faster.source) == (150e9, "measured now")
    assert [e["measured"] for e in json.loads(cache.read_text()).values()] == ["2025-01-04"]  # only ever raised
    other = device_peak(cpu, "bf16", cache_file=cache, measure=lambda: 10e9)  # keyed by precision too
    assert other.flops_per_s == 10e9
    saved = {"device": "cpu", "precision": "fp32", "flops_per_s": 200e9}  # a resumed run's own figure
    assert device_peak(cpu, "fp32", cache_file=None, saved=saved, measure=lambda: 1e9).source.startswith("kept from")
    cache.write_text("not json")  # a damaged cache is measured afresh and rewritten
    assert device_peak(cpu, "fp32", cache_file=cache, measure=lambda: 5e9).source == "measured now"
    assert json.loads(cache.read_text())


def test_a_step_faster_than_the_peak_remeasures_then_takes_the_rate_as_a_lower_bound() -> None:
    remeasured = []

    def remeasure(value):
        def measure() -> float:
            remeasured.append(value)
            return value

        return measure

    # 2000 tokens/s x 1 MFLOP = 2 GFLOP/s against a peak measured at 1 GFLOP/s (a busy machine).
    for again, peak, source in [(4e9, 4e9, "re-measured"), (1.5e9, 2e9, "reached in training (a lower bound)")]:
        monitor = RunMonitor(
            device=torch.device("cpu"),
            flops_per_token=1e6,
            peak_flops=1e9,
            total_steps=10,
            start_step=0,
            remeasure=remeasure(again),
        )
        record = monitor.enrich({"step": 1, "tokens_per_s": 2000.0})
        assert record["mfu"] == pytest.approx(2e9 / peak) and record["mfu"] <= 1.0
        assert record["peak_flops_per_s"] == peak and record["peak_source"] == source
        slower = monitor.enrich({"step": 2, "tokens_per_s": 1000.0})  # the raised peak stays
        assert slower["mfu"] == pytest.approx(1e9 / peak) and "peak_source" not in slower
    assert remeasured == [4e9, 1.5e9]  # once per monitor, only when a step beat the peak


def test_header_says_where_the_peak_came_from(tiny_run: Path) -> None:
    from stlm.training.logging import format_header

    header = json.loads((tiny_run / "config.json").read_text())["header"]
    assert header["matmul_peak"]["source"].startswith(("measured now", "cached from"))
    assert f"({header['matmul_peak']['source']})" in format_header(header)
