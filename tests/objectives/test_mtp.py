"""Multi-token prediction: head k's target is the id k ahead, never across documents; exact counts; resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from stlm.cli.main import main
from stlm.config import ObjectiveConfig
from stlm.errors import UserError
from stlm.models.byte_decoder import PooledByteConfig, PooledByteLM
from stlm.models.byte_decoder import count_params as pooled_count
from stlm.models.byte_decoder.config import param_breakdown
from stlm.models.decoder import DecoderConfig, DecoderLM, count_params
from stlm.objectives.mtp import mtp_loss, mtp_targets
from stlm.objectives.next_token import IGNORE_INDEX, model_loss
from stlm.training.loop import resume, train

from ..conftest import tiny_config

BOS, EOS, X = 257, 258, IGNORE_INDEX


def test_head_k_targets_the_id_k_ahead_within_the_document():
    #                    0    1   2   3   4    5    6   7   8
    window = torch.tensor([[BOS, 10, 11, 12, EOS, BOS, 20, 21, 22]])  # (1, T+1), T = 8
    targets = mtp_targets(window, 3, BOS)  # (1, 8, 3)
    assert targets[0, :, 0].tolist() == [10, 11, 12, EOS, BOS, 20, 21, 22]  # next-token's, BOS after EOS kept
    assert targets[0, :, 1].tolist() == [11, 12, EOS, X, X, 21, 22, X]  # 2 ahead; X: next document or past the end
    assert targets[0, :, 2].tolist() == [12, EOS, X, X, X, 22, X, X]
    # Randomised: every kept target is window[t + k] in the input's document; every dropped one is not.
    g = torch.Generator().manual_seed(0)
    window = torch.randint(0, 260, (4, 65), generator=g)
    targets = mtp_targets(window, 4, BOS)
    doc = (window == BOS).long().cumsum(1)
    for b in range(4):
        for t in range(64):
            for k in range(1, 5):
                ahead = t + k
                inside = ahead <= 64 and (k == 1 or doc[b, ahead] == doc[b, t])
                assert targets[b, t, k - 1] == (window[b, ahead] if inside else X)


def test_next_byte_head_alone_is_the_next_token_loss():
    torch.manual_seed(0)
    model = DecoderLM(DecoderConfig(d_model=32, n_layers=2, n_heads=2, max_seq_len=64, mtp_heads=2))
    window = torch.randint(0, 264, (3, 33))
    logits = model(window[:, :-1], heads=True)  # (B, T, 3, V)
    assert torch.equal(logits[:, :, 0], model(window[:, :-1]))
    only_next = mtp_loss(logits, mtp_targets(window, 3, BOS), torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(only_next, model_loss(model, window))


def test_heads_are_counted_exactly():
    for heads in (0, 1, 3):
        cfg = DecoderConfig(d_model=64, n_layers=2, n_heads=2, mtp_heads=heads)
        assert (
            count_params(cfg)
            == DecoderLM(cfg).num_params()
            == count_params(DecoderConfig(**{**cfg.to_dict(), "mtp_heads": 0})) + heads * (64 + 3 * 64 * 64)
        )
        pcfg = PooledByteConfig(
            d_local=32, local_heads=2, d_global=64, n_global_layers=1, global_heads=2, mtp_heads=heads
        )
        assert pooled_count(pcfg) == PooledByteLM(pcfg).num_params()
        assert param_breakdown(pcfg).get("mtp_heads", 0) == heads * (32 + 3 * 32 * 32)


def test_bad_k_and_t5_are_one_line_and_write_nothing(tmp_path, capsys):
    for k in ("mtp:1", "mtp:0", "mtp:x"):
        with pytest.raises(UserError, match="K >= 2"):
            ObjectiveConfig(name=k)
    with pytest.raises(UserError, match="mtp_weights"):
        ObjectiveConfig(name="mtp:3", mtp_weights="1,1")
    for model, objective in (("decoder-tiny", "mtp:1"), ("t5-debug", "mtp:4")):
        out = tmp_path / model
        assert main(["train", "--model", model, "--objective", objective, "--steps", "2", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error" in err
        assert not out.exists()


def test_mtp_resume_equals_uninterrupted(tmp_path, corpus_dir, cache_dir, one_thread):
    """With a curriculum that switches the extra heads on mid-run: resumed weights and losses are identical."""
    cfg = tiny_config(corpus_dir, cache_dir, steps=4, log_every=1, batch_size=2, eval_tokens=256)
    cfg = cfg.with_overrides({"objective.name": "mtp:3", "objective.mtp_curriculum": 0.5, "data.seq_len": 32})
    straight = train(cfg, tmp_path / "straight", progress=False)
    assert train(cfg, tmp_path / "resumed", stop_at=2, progress=False).interrupted
    resumed = resume(tmp_path / "resumed", overrides={"data.source": str(corpus_dir)}, progress=False)
    a = load_file(straight.checkpoint / "model.safetensors")
    b = load_file(resumed.checkpoint / "model.safetensors")
    assert any(key.startswith("mtp.") for key in a) and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.val == straight.val

    def losses(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if "loss" in r]

    assert losses("straight") == losses("resumed")
