"""Span-corruption pretraining of a tiny T5 through the one training loop."""

import json

import torch
from safetensors.torch import load_file

from stlm.config import DataConfig, ObjectiveConfig, OptimConfig, RunConfig, RuntimeConfig, TrainConfig
from stlm.training.loop import resume, train


def t5_config(corpus_dir, cache_dir, **train_settings):
    settings = dict(steps=6, batch_size=4, eval_every=0, save_every=0, log_every=1, eval_tokens=4096)
    settings.update(train_settings)
    return RunConfig(
        model="t5-debug",
        data=DataConfig(source=str(corpus_dir), seq_len=64, cache_dir=str(cache_dir)),
        objective=ObjectiveConfig(name="span-corruption", mean_span=3.0),
        optim=OptimConfig(name="adamw-rms", lr=2e-2, warmup_steps=5, weight_decay=0.0),
        train=TrainConfig(**settings),
        runtime=RuntimeConfig(device="cpu", precision="fp32"),
    )


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_tiny_t5_learns_span_corruption(tmp_path, corpus_dir, cache_dir):
    result = train(
        t5_config(corpus_dir, cache_dir, steps=80, batch_size=8, log_every=5), tmp_path / "t5", progress=False
    )
    losses = _losses(tmp_path / "t5")
    first = losses[0]
    assert first > 4.5  # about ln(384) at initialisation: nothing known yet
    assert result.val["val_loss"] < first - 2.0, (first, result.val)
    resolved = json.loads((result.checkpoint / "config.json").read_text())
    assert resolved["tokenizer"]["name"] == "byt5" and resolved["model_config"]["family"] == "t5"


def test_span_corruption_resume_equals_uninterrupted(tmp_path, corpus_dir, cache_dir):
    cfg = t5_config(corpus_dir, cache_dir, steps=6)
    straight = train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "resumed", stop_at=3, progress=False)
    resumed = resume(tmp_path / "resumed", overrides={"data.source": str(corpus_dir)}, progress=False)
    a = load_file(straight.checkpoint / "model.safetensors")
    b = load_file(resumed.checkpoint / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "resumed")


def test_adafactor_recipe_runs(tmp_path, corpus_dir, cache_dir):
    cfg = t5_config(corpus_dir, cache_dir, steps=3)
    cfg.optim.name, cfg.optim.lr, cfg.optim.schedule = "adafactor", 1e-2, "constant"
    result = train(cfg, tmp_path / "adafactor", progress=False)
    assert result.step == 3 and result.val["val_loss"] > 0
