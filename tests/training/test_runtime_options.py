"""Runtime options: validated settings, activation checkpointing, the fp16 scaler path, block discovery."""

from __future__ import annotations

import pytest
import torch

from stlm import registry
from stlm.config import RunConfig, RuntimeConfig
from stlm.errors import UserError
from stlm.models.t5 import T5Config
from stlm.objectives.next_token import model_loss
from stlm.objectives.seq2seq import seq2seq_loss
from stlm.runtime import block_lists, checkpoint_blocks, resolve_runtime


def test_runtime_settings_are_validated() -> None:
    with pytest.raises(UserError, match="runtime.precision must be one of auto, fp32, bf16, fp16"):
        RuntimeConfig(precision="fp8")
    with pytest.raises(UserError, match="runtime.compile must be bool"):
        RunConfig().with_overrides({"runtime.compile": "maybe"})
    cfg = RunConfig().with_overrides({"runtime.activation_checkpointing": "true", "runtime.compile": "false"})
    assert cfg.runtime.activation_checkpointing is True and cfg.runtime.compile is False
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_runtime(RuntimeConfig(device="cuda"))
    with pytest.raises(UserError, match="data.workers"):
        RunConfig().with_overrides({"data.workers": -1})


def test_describe_and_scaler_follow_the_settings() -> None:
    plain = resolve_runtime(RuntimeConfig(device="cpu", precision="fp32"))
    assert plain.scaler is None and plain.describe().endswith("fp32")
    fp16 = resolve_runtime(RuntimeConfig(device="cpu", precision="fp16", activation_checkpointing=True))
    assert fp16.scaler is not None and "activation checkpointing" in fp16.describe()


def test_fp16_step_goes_through_the_scaler(one_thread) -> None:
    runtime = resolve_runtime(RuntimeConfig(device="cpu", precision="fp16"))
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 8)
    before = layer.weight.detach().clone()
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2)
    with runtime.autocast():
        loss = layer(torch.randn(4, 8)).float().pow(2).mean()
    runtime.backward(loss)
    runtime.unscale(opt)
    assert torch.isfinite(layer.weight.grad).all()
    runtime.step(opt)
    assert not torch.equal(before, layer.weight)
    assert runtime.scaler.get_scale() > 0


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_gives_identical_gradients_decoder(one_thread) -> None:
    family, cfg = registry.get_config("decoder-tiny")
    window = torch.randint(0, 256, (2, 33), generator=torch.Generator().manual_seed(0))
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = registry.build_model(family, cfg)
        if checkpointed:
            assert checkpoint_blocks(model) == cfg.n_layers
        model_loss(model, window).backward()
        grads.append(_grads(model))
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name


def test_activation_checkpointing_gives_identical_gradients_t5_with_dropout(one_thread) -> None:
    cfg = T5Config(vocab_size=64, d_model=32, d_head=8, n_heads=4, d_ff=64, n_layers=2, n_decoder_layers=2, dropout=0.1)
    g = torch.Generator().manual_seed(1)
    inputs, targets = torch.randint(2, 60, (2, 12), generator=g), torch.randint(2, 60, (2, 5), generator=g)
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = registry.build_model("t5", cfg)
        if checkpointed:
            assert len(block_lists(model)) == 2  # encoder and decoder stacks
            checkpoint_blocks(model)
        torch.manual_seed(5)  # same dropout draws; checkpointing replays them in the recomputation
        seq2seq_loss(model, inputs, targets, pad_id=0, decoder_start_id=0).backward()
        grads.append(_grads(model))
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name


def test_checkpointing_needs_a_block_stack() -> None:
    with pytest.raises(UserError, match="no stack of repeated blocks"):
        checkpoint_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))
