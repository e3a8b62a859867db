"""Resuming with other settings: the safe ones apply (extending a run continues it exactly), the rest are refused."""

import json

import pytest
import torch
from safetensors.torch import load_file

from stlm import checkpoint as ckpt_io
from stlm.cli.main import main as cli_main
from stlm.errors import UserError
from stlm.training.loop import RESUME_SAFE_KEYS, resume, train
from stlm.training.optim import lr_at

from ..conftest import tiny_config


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_extending_a_constant_schedule_equals_planning_it_that_long(tmp_path, corpus_dir, cache_dir, one_thread):
    cfg = tiny_config(corpus_dir, cache_dir, steps=10, log_every=1)
    cfg.optim.schedule = "constant"
    straight = train(cfg, tmp_path / "straight", progress=False)
    cfg.train.steps = 5
    short = train(cfg, tmp_path / "extended", progress=False)
    assert short.step == 5 and not short.interrupted
    extended = resume(
        tmp_path / "extended", overrides={"train.steps": 10, "data.source": str(corpus_dir)}, progress=False
    )
    assert extended.step == 10 and not extended.interrupted
    a, b = load_file(straight.checkpoint / "model.safetensors"), load_file(extended.checkpoint / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key

    def losses(run):
        return [(r["step"], r["loss"]) for r in _rows(run) if "loss" in r]

    assert losses(tmp_path / "extended") == losses(tmp_path / "straight")
    resolved = ckpt_io.load_config(extended.checkpoint)["run"]
    assert resolved["train"]["steps"] == 10 and resolved["optim"]["warmup_steps"] == 2


def test_extending_a_cosine_run_follows_the_longer_schedule(tmp_path, corpus_dir, cache_dir, one_thread):
    cfg = tiny_config(corpus_dir, cache_dir, steps=4, log_every=1)
    cfg.optim.warmup_steps, cfg.optim.warmup_fraction = None, 0.5  # a fraction of the first session, kept on resume
    train(cfg, tmp_path / "run", progress=False)
    saved = ckpt_io.load_config(ckpt_io.latest_checkpoint(tmp_path / "run"))["run"]["optim"]
    assert saved["warmup_steps"] == 2
    resume(
        tmp_path / "run",
        overrides={"train.steps": "8", "train.log_every": 2, "data.source": str(corpus_dir)},
        progress=False,
    )
    optim = tiny_config(corpus_dir, cache_dir).optim
    optim.warmup_steps = saved["warmup_steps"]
    logged = {r["step"]: r["lr"] for r in _rows(tmp_path / "run") if "lr" in r}
    assert sorted(logged) == [1, 2, 3, 4, 6, 8]  # each session's own log_every
    for step in (6, 8):
        assert logged[step] == lr_at(step - 1, 8, optim)  # the lr of step s is lr_at(s - 1, new total)
    assert lr_at(3, 8, optim) > logged[4]  # had the run been planned at 8 steps, step 4 would have decayed less


def test_unsafe_changes_are_refused_naming_the_setting(tmp_path, corpus_dir, cache_dir, one_thread):
    cfg = tiny_config(corpus_dir, cache_dir, steps=3)
    train(cfg, tmp_path / "run", stop_at=2, progress=False)
    for key, value in [("optim.lr", 1.0), ("data.seq_len", 32), ("model.d_model", 64), ("model", "decoder-10m")]:
        with pytest.raises(UserError, match=rf"^{key.replace('.', '[.]')} cannot change when resuming") as err:
            resume(tmp_path / "run", overrides={key: value}, progress=False)
        assert "\n" not in str(err.value) and "train.steps" in str(err.value)
    assert ckpt_io.latest_checkpoint(tmp_path / "run").name == "step-00000002"  # nothing ran
    # Naming a setting with the value it already has changes nothing, so it is accepted.
    result = resume(
        tmp_path / "run",
        overrides={"optim.lr": cfg.optim.lr, "runtime.threads": 1, "data.source": str(corpus_dir)},
        progress=False,
    )
    assert result.step == 3
    assert set(RESUME_SAFE_KEYS) >= {"train.steps", "runtime.threads", "runtime.device", "train.log_every"}


def test_cli_resume_takes_safe_flags_and_refuses_the_rest(tmp_path, corpus_dir, cache_dir, capsys, one_thread):
    cfg = tiny_config(corpus_dir, cache_dir, steps=2)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    run = str(tmp_path / "run")
    assert cli_main(["train", "--config", str(tmp_path / "cfg.json"), "--out", run, "--quiet"]) == 0
    assert cli_main(["train", "--resume", run, "--lr", "0.1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--lr cannot be used with --resume" in err and len(err.strip().splitlines()) == 1
    assert (
        cli_main(["train", "--resume", run, "--data", str(corpus_dir), "--steps", "4", "--threads", "1", "--quiet"])
        == 0
    )
    assert ckpt_io.latest_checkpoint(tmp_path / "run").name == "step-00000004"


def test_a_run_written_before_these_settings_existed_reads_and_extends():
    from pathlib import Path

    from stlm.config import RunConfig, apply_resume_overrides

    old = Path(__file__).resolve().parents[1] / "fixtures" / "old-layout" / "decoder"
    record = ckpt_io.read_record(ckpt_io.latest_checkpoint(old) / "config.json")
    cfg = RunConfig.from_dict(record.sections["run"])
    assert cfg.arch == {} and cfg.optim.warmup_steps == 1  # no model settings; its warmup as written
    longer = apply_resume_overrides(cfg, {"train.steps": 9}, RESUME_SAFE_KEYS, run_dir=old)
    assert longer.train.steps == 9 and longer.optim == cfg.optim
