import json

import pytest
import torch
from safetensors.torch import load_file

from stlm import checkpoint as ckpt_io
from stlm.config import OptimConfig
from stlm.errors import UserError
from stlm.models.decoder import DecoderConfig
from stlm.objectives.next_token import model_loss
from stlm.registry import build_model
from stlm.training.loop import resume, train
from stlm.training.optim import build_optimizer

from ..conftest import tiny_config


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = build_model("decoder", DecoderConfig(d_model=64, n_layers=2, n_heads=2, max_seq_len=64))
    opt = build_optimizer(model, OptimConfig(lr=1e-2, weight_decay=0.0), torch.device("cpu"))
    window = torch.randint(0, 256, (4, 33))
    first = None
    for _ in range(150):
        loss = model_loss(model, window)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 5.0 and float(loss.detach()) < 0.05


def test_resume_equals_uninterrupted(tmp_path, corpus_dir, cache_dir):
    cfg = tiny_config(corpus_dir, cache_dir, steps=10, eval_every=4, log_every=2)
    straight = train(cfg, tmp_path / "straight", progress=False)
    half = train(cfg, tmp_path / "resumed", stop_at=5, progress=False)
    assert half.interrupted and half.step == 5
    resumed = resume(tmp_path / "resumed", overrides={"data.source": str(corpus_dir)}, progress=False)
    assert resumed.step == straight.step == 10 and not resumed.interrupted

    a = load_file(straight.checkpoint / "model.safetensors")
    b = load_file(resumed.checkpoint / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.val == straight.val

    def losses(run):
        rows = [json.loads(l) for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if "loss" in r]

    assert losses("straight") == losses("resumed")


def test_training_lowers_validation_bpb(tmp_path, corpus_dir, cache_dir):
    from stlm.data import prepare_data, unigram_bits_per_byte
    from stlm.tokenizers import ByteTokenizer

    cfg = tiny_config(corpus_dir, cache_dir, steps=150, batch_size=8, eval_every=0, eval_tokens=8192)
    result = train(cfg, tmp_path / "run", progress=False)
    val = prepare_data(str(corpus_dir), ByteTokenizer(), cache_dir=cache_dir, progress=False).val[: 8192 + 1]
    # Beats the best order-0 model of the very bytes it is scored on.
    assert result.val["val_bpb"] < unigram_bits_per_byte(val) - 0.2
    for name in ("config.json", "metrics.jsonl"):
        assert (tmp_path / "run" / name).is_file()
    resolved = json.loads((result.checkpoint / "config.json").read_text())
    assert resolved["run"]["model"] == "decoder-tiny" and resolved["model_config"]["family"] == "decoder"


def test_refuses_to_overwrite_an_existing_run(tmp_path, corpus_dir, cache_dir):
    cfg = tiny_config(corpus_dir, cache_dir, steps=2)
    train(cfg, tmp_path / "run", progress=False)
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    with pytest.raises(UserError, match="already holds a run"):
        train(cfg, tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before


def test_unknown_preset_and_resume_of_nothing(tmp_path, corpus_dir, cache_dir):
    cfg = tiny_config(corpus_dir, cache_dir)
    cfg.model = "decoder-tinyy"
    with pytest.raises(UserError, match="decoder-tiny"):
        train(cfg, tmp_path / "x", progress=False)
    with pytest.raises(UserError, match="no complete checkpoint"):
        resume(tmp_path / "empty", progress=False)


def test_gradient_accumulation_matches_one_big_batch(tmp_path, corpus_dir, cache_dir):
    # batch 2 x 2 micro-batches draws the same windows, in the same order, as batch 4.
    big = train(tiny_config(corpus_dir, cache_dir, steps=3, batch_size=4), tmp_path / "big", progress=False)
    acc = train(
        tiny_config(corpus_dir, cache_dir, steps=3, batch_size=2, grad_accum=2), tmp_path / "acc", progress=False
    )
    a = load_file(big.checkpoint / "model.safetensors")
    b = load_file(acc.checkpoint / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_bf16_autocast_trains(tmp_path, corpus_dir, cache_dir):
    cfg = tiny_config(corpus_dir, cache_dir, steps=3)
    cfg.runtime.precision = "bf16"
    result = train(cfg, tmp_path / "bf16", progress=False)
    assert result.step == 3 and 0 < result.val["val_bpb"] < 9
    weights = load_file(result.checkpoint / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in weights.values())  # master weights stay fp32


def test_pooled_entropy_model_is_fitted_then_resumed_unchanged(tmp_path, corpus_dir, cache_dir):
    cfg = tiny_config(corpus_dir, cache_dir, steps=4)
    cfg.model = "pooled-tiny-entropy"
    straight = train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "resumed", stop_at=2, progress=False)
    resumed = resume(tmp_path / "resumed", overrides={"data.source": str(corpus_dir)}, progress=False)
    a = load_file(straight.checkpoint / "model.safetensors")
    b = load_file(resumed.checkpoint / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.val["val_bpb"] == resumed.val["val_bpb"]
    model = ckpt_io.load(resumed.checkpoint).model
    assert bool(model.boundaries.fitted)  # the fitted rule travelled in the checkpoint
