"""Crash safety: SIGKILL at random moments, non-finite losses, a full disk while saving."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from stlm import checkpoint as ckpt_io
from stlm.cli.main import main as cli_main
from stlm.errors import UserError
from stlm.objectives.next_token import NextTokenObjective
from stlm.training.loop import resume, train

from ..conftest import tiny_config

KILLS = 4


def _step(ckpt):
    return -1 if ckpt is None else int(ckpt.name.split("-")[1])


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path, corpus_dir, cache_dir, one_thread):
    cfg = tiny_config(corpus_dir, cache_dir, steps=20, save_every=1, keep_checkpoints=2, log_every=1, eval_tokens=512)
    cfg.runtime.threads = 1  # same arithmetic in this process and in the killed ones
    straight = train(cfg, tmp_path / "straight", progress=False)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))

    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    fresh = [
        sys.executable,
        "-m",
        "stlm",
        "train",
        "--config",
        str(tmp_path / "cfg.json"),
        "--out",
        str(run),
        "--quiet",
    ]
    again = [sys.executable, "-m", "stlm", "train", "--resume", str(run), "--data", str(corpus_dir), "--quiet"]
    rng = random.Random(6)
    last = -1
    for kill in range(KILLS):
        proc = subprocess.Popen(again if kill else fresh, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        # The first kill may land before any checkpoint exists; later ones after this process saved one.
        while proc.poll() is None and time.monotonic() < deadline:
            if (run / "config.json").exists() if kill == 0 else _step(ckpt_io.latest_checkpoint(run)) > last:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode in (-signal.SIGKILL, 0), proc.stderr.read().decode()[-2000:]
        latest = ckpt_io.latest_checkpoint(run)
        assert _step(latest) >= last  # never behind an earlier complete checkpoint
        for ckpt in ckpt_io.list_checkpoints(run):
            ckpt_io.verify_checkpoint(ckpt)  # every checkpoint that counts is whole
        last = _step(latest)

    done = subprocess.run(again, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert last > 0 and not list((run / "checkpoints").glob(".step-*"))  # killed saves left nothing behind
    assert [s for s, _ in _losses(run)] == list(range(1, 21))  # each step logged once, in order
    a, b = (
        load_file(straight.checkpoint / "model.safetensors"),
        load_file(ckpt_io.latest_checkpoint(run) / "model.safetensors"),
    )
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _losses(run) == _losses(tmp_path / "straight")


def _poison(monkeypatch, bad_calls):
    """Make the training loss NaN on the given (1-based) calls."""
    original, calls = NextTokenObjective.loss, {"n": 0}

    def loss(self, model, *tensors):
        if tensors[0].device.type == "meta":  # the loop's FLOP count runs the loss once on the meta device
            return original(self, model, *tensors)
        calls["n"] += 1
        value = original(self, model, *tensors)
        return value * float("nan") if bad_calls(calls["n"]) else value

    monkeypatch.setattr(NextTokenObjective, "loss", loss)


def test_nonfinite_loss_skips_the_update_then_continues(tmp_path, corpus_dir, cache_dir, monkeypatch, one_thread):
    _poison(monkeypatch, lambda n: n in (3, 4))
    cfg = tiny_config(corpus_dir, cache_dir, steps=6, log_every=1, eval_tokens=512)
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.step == 6 and not result.interrupted
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["consecutive"]) for r in rows if "skipped" in r] == [(3, 1), (4, 2)]
    optimizer = ckpt_io.read_optimizer_state(result.checkpoint)
    assert {int(s["step"]) for s in optimizer["state"].values()} == {4}  # 6 steps, 2 without an update
    assert all(torch.isfinite(t).all() for t in load_file(result.checkpoint / "model.safetensors").values())


def test_nonfinite_loss_too_often_stops_with_a_clear_error(
    tmp_path, corpus_dir, cache_dir, monkeypatch, capsys, one_thread
):
    _poison(monkeypatch, lambda n: n >= 3)
    cfg = tiny_config(corpus_dir, cache_dir, steps=8, save_every=1, log_every=1, eval_tokens=512, nonfinite_skips=2)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    code = cli_main(["train", "--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "NaN/inf for 3 steps in a row (up to step 5" in err and "train.nonfinite_skips = 2" in err
    latest = ckpt_io.latest_checkpoint(tmp_path / "run")
    assert latest.name == "step-00000004"  # steps 3 and 4 were skipped and saved; step 5 stopped the run
    assert all(torch.isfinite(t).all() for t in load_file(latest / "model.safetensors").values())


def test_full_disk_while_saving_keeps_the_previous_checkpoint(
    tmp_path, corpus_dir, cache_dir, monkeypatch, full_disk, one_thread
):
    cfg = tiny_config(corpus_dir, cache_dir, steps=4, save_every=2, eval_tokens=512)
    straight = train(cfg, tmp_path / "straight", progress=False)
    real_save = full_disk(torch, "save", on_call=2)  # the second checkpoint (step 4)
    run = tmp_path / "run"
    with pytest.raises(OSError, match="No space left"):
        train(cfg, run, progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    root = run / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step-00000002"]  # the temp dir was removed
    ckpt_io.load(run)  # the previous checkpoint is the latest and loads

    # Debris of other failures is never taken for the latest checkpoint either.
    half = root / ".step-00000004.tmp-12345"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    (root / "step-00000003").mkdir()  # no manifest
    assert ckpt_io.latest_checkpoint(run).name == "step-00000002"
    resumed = resume(run, overrides={"data.source": str(corpus_dir)}, progress=False)
    assert resumed.step == 4 and not half.exists()
    a, b = load_file(straight.checkpoint / "model.safetensors"), load_file(resumed.checkpoint / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(UserError, match="incomplete"):
        ckpt_io.resolve_checkpoint(root / "step-00000003")
