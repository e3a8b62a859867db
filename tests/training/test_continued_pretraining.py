"""Continued pretraining: `--model RUN` starts a new run from a checkpoint's weights, shape and tokenizer."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from stlm import checkpoint as ckpt_io
from stlm.cli.main import main
from stlm.config import OptimConfig
from stlm.errors import UserError
from stlm.training.loop import resume, train
from tests.conftest import tiny_config


def _weights(path) -> dict[str, torch.Tensor]:
    return ckpt_io.load(path).model.state_dict()


@pytest.fixture(scope="module")
def entropy_run(tmp_path_factory, corpus_dir, cache_dir):
    """A pooled-tiny run with the entropy rule, whose fitted buffers must travel with the weights."""
    cfg = dataclasses.replace(
        tiny_config(corpus_dir, cache_dir, steps=3), model="pooled-tiny", arch={"boundary": "entropy"}
    )
    run = tmp_path_factory.mktemp("runs") / "entropy"
    train(cfg, run, progress=False)
    return run


def test_a_continued_run_starts_from_the_checkpoint_weights(entropy_run, corpus_dir, cache_dir, tmp_path, one_thread):
    start = ckpt_io.latest_checkpoint(entropy_run)
    before = _weights(start)
    assert any("boundar" in k for k in before)  # the fitted entropy rule is part of what continues
    # A learning rate so small that one step leaves every weight where the checkpoint had it.
    cfg = dataclasses.replace(
        tiny_config(corpus_dir, cache_dir, steps=1),
        model=str(entropy_run),
        optim=OptimConfig(lr=1e-12, warmup_steps=0, weight_decay=0.0),
    )
    result = train(cfg, tmp_path / "more", progress=False)
    after = _weights(result.checkpoint)
    assert after.keys() == before.keys()
    for key in before:
        assert torch.allclose(after[key].float(), before[key].float(), atol=1e-6), key
    record = ckpt_io.read_record(result.checkpoint / "config.json")
    assert record.sections["init_checkpoint"] == str(start)
    assert record.model_config == ckpt_io.read_record(start / "config.json").model_config
    assert record.sections["run"]["model"] == str(entropy_run)


def test_continued_then_resumed_equals_uninterrupted(tiny_run, corpus_dir, cache_dir, tmp_path, one_thread):
    cfg = dataclasses.replace(tiny_config(corpus_dir, cache_dir, steps=4, save_every=2), model=str(tiny_run))
    straight = train(cfg, tmp_path / "straight", progress=False)
    stopped = train(cfg, tmp_path / "cut", stop_at=2, progress=False)
    assert stopped.interrupted and stopped.step == 2
    resumed = resume(tmp_path / "cut", overrides={"data.source": str(corpus_dir)}, progress=False)
    assert resumed.step == 4
    a, b = _weights(straight.checkpoint), _weights(resumed.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)
    named = ckpt_io.read_record(resumed.checkpoint / "config.json").sections["init_checkpoint"]
    assert named == str(ckpt_io.latest_checkpoint(tiny_run))  # the resumed run still says where it started


def test_what_a_continued_run_cannot_change_is_refused(tiny_run, corpus_dir, cache_dir, tmp_path, one_thread):
    base = dataclasses.replace(tiny_config(corpus_dir, cache_dir, steps=1), model=str(tiny_run))
    cases = [
        (dataclasses.replace(base, arch={"d_model": 64}), r"model\.d_model cannot be set when continuing"),
        (dataclasses.replace(base, data=dataclasses.replace(base.data, tokenizer="byt5")), "own tokenizer"),
        (
            dataclasses.replace(base, objective=dataclasses.replace(base.objective, name="mtp:2")),
            "needs another model shape",
        ),
        (dataclasses.replace(base, model=str(tmp_path)), "holds no complete checkpoint"),
    ]
    for cfg, message in cases:
        with pytest.raises(UserError, match=message):
            train(cfg, tmp_path / "out", progress=False)
        assert not (tmp_path / "out").exists()  # nothing written
    with pytest.raises(UserError, match="holds checkpoints"):
        train(base, tiny_run / "checkpoints" / "more", progress=False)


def test_a_continued_run_killed_before_its_first_checkpoint_names_what_to_do(
    tiny_run, corpus_dir, cache_dir, tmp_path, one_thread
):
    cfg = dataclasses.replace(tiny_config(corpus_dir, cache_dir, steps=1), model=str(tiny_run))
    done = train(cfg, tmp_path / "done", progress=False)
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copy(done.checkpoint / "config.json", killed / "config.json")  # what a run writes before step 1
    with pytest.raises(UserError, match=r"stopped before its first checkpoint.*start it again with --model"):
        resume(killed, overrides={"data.source": str(corpus_dir)}, progress=False)


def test_cli_continues_a_run(tiny_run, corpus_dir, cache_dir, tmp_path, capsys, one_thread):
    argv = ["pretrain", "--model", str(tiny_run), "--data", str(corpus_dir), "--seq-len", "64", "--steps", "2"]
    argv += ["--batch-size", "2", "--eval-tokens", "512", "--cache-dir", str(cache_dir), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "more")]) == 0
    saved = json.loads((tmp_path / "more" / "config.json").read_text())
    assert saved["init_checkpoint"] == str(ckpt_io.latest_checkpoint(tiny_run))
    report = (tmp_path / "more" / "report.md").read_text()
    assert f"- continued from: `{ckpt_io.latest_checkpoint(tiny_run)}`" in report
    assert main([*argv, "--out", str(tmp_path / "bad"), "--set", "model.n_layers=2"]) == 2
    assert "model.n_layers cannot be set when continuing" in capsys.readouterr().err
