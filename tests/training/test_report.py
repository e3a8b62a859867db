"""Every training run ends with report.md and loss.png: steps, validation beside references, how to redo or go on."""

from __future__ import annotations

import json
import math
import shlex
from collections import Counter
from pathlib import Path

from stlm import registry
from stlm.config import RunConfig
from stlm.data import prepare_data
from stlm.tokenizers import ByteTokenizer
from stlm.training.loop import resume, train
from stlm.training.report import RunReport, Validation, train_command

from ..conftest import tiny_config


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_finished_run_reports_steps_validation_references_throughput_and_how_to_redo_it(
    tiny_run, corpus_dir, cache_dir
):
    report = (tiny_run / "report.md").read_text()
    assert (tiny_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "![loss curve](loss.png)" in report
    cfg = RunConfig.from_dict(json.loads((tiny_run / "config.json").read_text())["run"])
    n_params = registry.count_params(*registry.get_config("decoder-tiny"))
    assert f"# stlm train: decoder-tiny on {corpus_dir}" in report
    assert f"`decoder-tiny`, {n_params:,} parameters" in report
    assert f"- training: {cfg.train.steps} steps x 4 x 64 bytes in " in report and "Stopped early" not in report
    assert "- throughput: " in report and " tokens/s (= bytes/s), MFU " in report

    last = [r for r in metrics(tiny_run) if "val_bpb" in r][-1]
    assert f"## Validation bits per byte ({last['val_bytes']:,} bytes: " in report
    assert f"| **decoder-tiny** | **{last['val_bpb']:.3f}** |" in report
    # The order-0 reference is the entropy of the validation bytes the loop scored, counted here by hand.
    val = prepare_data(str(corpus_dir), ByteTokenizer(), cache_dir=str(cache_dir), progress=False).val
    scored = bytes(int(i) for i in val[: cfg.train.eval_tokens + 1] if i < 256)
    entropy = -sum(c / len(scored) * math.log2(c / len(scored)) for c in Counter(scored).values())
    assert f"| order-0 (unigram) entropy of the same bytes | {entropy:.3f} |" in report
    assert "| uniform guess over 256 bytes | 8.000 |" in report

    reproduce = report.split("## Reproduce")[1]
    assert train_command(cfg, out=f"{tiny_run}-again") in reproduce and f"stlm evaluate {tiny_run}" in reproduce
    assert "## Continue" not in report


def test_the_reproduce_line_rebuilds_the_same_config():
    cfg = RunConfig.from_dict(
        {
            "model": "pooled-tiny",
            "data": {"source": "my corpus/with spaces", "seq_len": 128, "cache_dir": None, "streaming": True},
            "optim": {"lr": 1e-3, "schedule": "wsd", "warmup_steps": 0},
            "train": {"steps": 77, "batch_size": 3, "tensorboard": True},
            "runtime": {"device": "cpu", "threads": 1},
        }
    )
    words = shlex.split(train_command(cfg, out="runs/x y"))
    assert words[:2] == ["stlm", "train"] and words[-2:] == ["--out", "runs/x y"]
    flags = {"--model": "model", "--data": "data.source", "--steps": "train.steps"}
    overrides, rest = {}, words[2:-2]
    for flag, value in zip(rest[::2], rest[1::2]):
        if flag == "--set":
            key, _, setting = value.partition("=")
            overrides[key] = setting
        else:
            overrides[flags[flag]] = value
    # What the CLI does with these flags: the defaults, then each setting as a string it coerces.
    assert RunConfig().with_overrides(overrides) == cfg
    assert "train.batch_size" in overrides and "optim.beta1" not in overrides  # only what differs from the defaults


def test_a_run_stopped_early_says_where_and_how_to_go_on_then_resuming_finishes_the_report(
    tmp_path, corpus_dir, cache_dir
):
    cfg = tiny_config(corpus_dir, cache_dir, steps=8, eval_every=2)
    run = tmp_path / "run"
    result = train(cfg, run, stop_at=4, progress=False)
    assert result.interrupted and result.step == 4
    report = (run / "report.md").read_text()
    assert "**Stopped early, as --stop-at 4 asked, at step 4 of 8.**" in report
    assert "- training: 4 of 8 steps x 4 x 64 bytes" in report
    assert f"stlm train --resume {run}" in report.split("## Continue")[1]
    assert "--steps 8" in report.split("## Reproduce")[1].split("## Continue")[0]  # the whole run, not the part done
    assert "Validation bits per byte" in report  # the periodic one taken at step 4
    resume(run, overrides={"data.source": str(corpus_dir)}, progress=False)
    report = (run / "report.md").read_text()
    assert (
        "Stopped early" not in report and "- training: 8 steps x 4 x 64 bytes" in report and "## Continue" not in report
    )


def test_an_interrupted_report_without_validation_and_an_encoder_decoder_loss():
    base = dict(
        title="stlm train: t5-debug on pydocs",
        run_dir=Path("runs/t5"),
        model="t5-debug",
        n_params=1234,
        step=3,
        total_steps=10,
        batch="4 x 64 tokens",
        elapsed_s=6.0,
        device="cpu",
        checkpoint=Path("runs/t5/checkpoints/step-00000003"),
    )
    page = RunReport(
        **base, stopped="interrupted by a signal", continue_with=["stlm train --resume runs/t5"]
    ).markdown()
    assert "**Stopped early, interrupted by a signal, at step 3 of 10.** See Continue." in page
    assert "Validation" not in page and "stlm train --resume runs/t5" in page
    loss = Validation(2.5, "loss", 512, "the `pydocs` validation split", step=2)
    page = RunReport(**base, validation=loss).markdown()
    assert "## Validation loss (512 target tokens of the `pydocs` validation split, at step 2)" in page
    assert "**2.5000** nats per target token." in page and "BPB" not in page
