"""Dropout in the causal families (decoder, pooled): training only, no parameters, recorded only when set."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stlm import registry
from stlm.errors import UserError
from stlm.models.byte_decoder import PooledByteConfig
from stlm.models.decoder import DecoderConfig
from stlm.objectives.next_token import model_loss
from stlm.runtime import checkpoint_blocks

from .byte_decoder.helpers import packed, small_config

DECODER = dict(d_model=32, n_layers=2, n_heads=4, max_seq_len=64)


def _configs(p: float) -> list[tuple[str, object]]:
    return [("decoder", DecoderConfig(**DECODER, dropout=p)), ("pooled", small_config(dropout=p))]


def _ids() -> torch.Tensor:
    return torch.tensor([packed(b"The cat sat on the mat.", b"def f(x): return x")[:48]] * 2)  # (2, 48)


@pytest.mark.parametrize("index", [0, 1], ids=["decoder", "pooled"])
def test_dropout_acts_in_training_only_and_adds_no_parameters(index, one_thread):
    family, cfg = _configs(0.3)[index]
    _, plain_cfg = _configs(0.0)[index]
    torch.manual_seed(0)
    model = registry.build_model(family, cfg)
    plain = registry.build_model(family, plain_cfg)
    plain.load_state_dict(model.state_dict())  # same keys: dropout holds no state
    assert registry.get_family(family).count_params(cfg) == registry.get_family(family).count_params(plain_cfg)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    ids = _ids()
    with torch.no_grad():
        reference = plain.eval()(ids)
        assert torch.equal(model.eval()(ids), reference)  # inference ignores dropout
        assert torch.equal(plain.train()(ids), reference)  # p = 0 is no dropout at all, even in training
        model.train()
        first, second = model(ids), model(ids)
    assert not torch.allclose(first, reference, atol=1e-4) and not torch.allclose(first, second, atol=1e-4)
    torch.manual_seed(7)
    again = model(ids)
    torch.manual_seed(7)
    assert torch.equal(model(ids), again)  # the draws follow the seed


@pytest.mark.parametrize("index", [0, 1], ids=["decoder", "pooled"])
def test_activation_checkpointing_replays_the_same_dropout(index, one_thread):
    family, cfg = _configs(0.2)[index]
    ids = _ids()
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = registry.build_model(family, cfg).train()
        if checkpointed:
            assert checkpoint_blocks(model) > 0
        torch.manual_seed(5)
        model_loss(model, ids).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name


@pytest.mark.parametrize("cls, base", [(DecoderConfig, DECODER), (PooledByteConfig, None)])
def test_records_name_dropout_only_when_set(cls, base):
    cfg = cls(**base) if base else small_config()
    assert "dropout" not in cfg.to_dict()  # records written before the field read the same
    assert cls.from_dict(cfg.to_dict()) == cfg and cfg.dropout == 0.0
    tuned = dataclasses.replace(cfg, dropout=0.1)
    assert tuned.to_dict()["dropout"] == 0.1 and cls.from_dict(tuned.to_dict()) == tuned
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
            dataclasses.replace(cfg, dropout=bad)
    with pytest.raises(UserError, match=r"dropout must be a number in \[0, 1\)"):
        registry.config_from_dict({"family": "decoder", **DECODER, "dropout": 2})
