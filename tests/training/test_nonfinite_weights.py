"""Non-finite weights are never saved: the policy looks at the weights after an update, not only at
the loss and gradients."""

import json
import math

import pytest
import torch

from stlm import checkpoint as ckpt_io
from stlm import registry
from stlm.cli.main import main as cli_main
from stlm.config import OptimConfig, RuntimeConfig
from stlm.errors import UserError
from stlm.objectives.next_token import NextTokenObjective
from stlm.runtime import resolve_runtime
from stlm.training import distributed
from stlm.training.step import setup, train_step

from ..conftest import tiny_config


def _trainer(tmp_path):
    torch.manual_seed(0)
    family, cfg = registry.resolve_model("decoder-tiny")
    runtime = resolve_runtime(RuntimeConfig(device="cpu", precision="fp32"))
    par = distributed.Parallel(mode="none", rank=0, world_size=1, runtime=runtime)
    reports = []
    trainer = setup(
        family.build(cfg),
        OptimConfig(lr=1e-3, warmup_steps=0),
        par,
        run_dir=tmp_path / "run",
        nonfinite_skips=3,
        report=reports.append,
        progress=False,
    )
    record = ckpt_io.RunRecord(family, cfg, {"name": "byte"})
    return trainer, record, reports


def _objective():
    from stlm.tokenizers import ByteTokenizer

    return NextTokenObjective(32, ByteTokenizer().byte_lengths())


def _batch():
    g = torch.Generator().manual_seed(0)
    return [_objective().batch(torch.randint(3, 259, (2, 33), generator=g), (0, 0, 0))]


def test_a_save_with_a_nan_weight_is_refused_and_writes_nothing(tmp_path, one_thread):
    trainer, record, _ = _trainer(tmp_path)
    assert trainer.weights_finite()
    with torch.no_grad():
        next(trainer.model.parameters())[0, 0] = math.nan
    assert not trainer.weights_finite()
    with pytest.raises(UserError, match="NaN/inf"):
        trainer.save(5, record=record, state={}, keep=2)
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_an_update_that_broke_the_weights_is_skipped_then_stops_the_run_saying_so(tmp_path, one_thread):
    trainer, _, reports = _trainer(tmp_path)
    objective = _objective()
    train_step(trainer, objective, _batch(), step=0, lr=1e-3)
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(math.inf)  # what an update with lr=inf leaves
    for step in (1, 2, 3):  # nonfinite_skips = 3: the policy skips, then stops
        assert not train_step(trainer, objective, _batch(), step=step, lr=1e-3).applied
    with pytest.raises(UserError, match="4 steps in a row.*the weights themselves are NaN/inf"):
        train_step(trainer, objective, _batch(), step=4, lr=1e-3)
    assert [r["consecutive"] for r in reports] == [1, 2, 3]


def test_train_with_an_infinite_learning_rate_never_saves_a_nan_checkpoint(tmp_path, corpus_dir, cache_dir, capsys):
    cfg = tiny_config(corpus_dir, cache_dir, steps=4, save_every=1)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    run = tmp_path / "run"
    code = cli_main(["train", "--config", str(tmp_path / "cfg.json"), "--out", str(run), "--set", "optim.lr=inf"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert ckpt_io.list_checkpoints(run) == []
