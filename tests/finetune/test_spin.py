"""SPIN: the loss against a hand-computed DPO case, the frozen opponent, exact resume, one-line errors."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest
import torch

from stlm import checkpoint as ckpt_io
from stlm import registry
from stlm.cli.main import main
from stlm.config import OptimConfig, RuntimeConfig
from stlm.errors import UserError
from stlm.finetune.config import FinetuneConfig, FinetuneTrainConfig, TaskConfig
from stlm.finetune.examples import Example
from stlm.finetune.format import TextToText
from stlm.finetune.loop import finetune
from stlm.finetune.spin import Opponent, SpinConfig, SpinObjective, SpinTrainConfig, resolve_task, spin
from stlm.objectives.preference import sequence_logprobs, spin_loss
from stlm.runtime import resolve_runtime
from stlm.training import distributed
from stlm.training.step import setup, train_step


def test_spin_loss_is_dpo_by_hand():
    # Two examples: log p and log p_ref of the gold (y) and generated (y') answers, in nats.
    policy_gold, policy_gen = torch.tensor([-2.0, -5.0]), torch.tensor([-4.0, -1.0])
    ref_gold, ref_gen = torch.tensor([-3.0, -4.0]), torch.tensor([-3.5, -2.0])
    # Example 0: margin = (-2 + 3) - (-4 + 3.5) = 1.5; example 1: (-5 + 4) - (-1 + 2) = -2.
    beta = 0.1
    expected = [math.log1p(math.exp(-beta * 1.5)), math.log1p(math.exp(-beta * -2.0))]  # -log sigmoid(z)
    got = spin_loss(policy_gold, policy_gen, ref_gold, ref_gen, beta=beta)
    assert got.tolist() == pytest.approx(expected, rel=1e-6)
    # Equal policy and reference: every margin is 0, the loss is log 2.
    assert spin_loss(ref_gold, ref_gen, ref_gold, ref_gen, beta=beta).tolist() == pytest.approx([math.log(2)] * 2)


def test_sequence_logprobs_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))  # (1, 2, 3) probabilities, logged
    got, n = sequence_logprobs(logits, torch.tensor([[0, 2]]))
    assert got.item() == pytest.approx(math.log(0.5) + math.log(0.8)) and n.tolist() == [2]
    got, n = sequence_logprobs(logits, torch.tensor([[-100, 1]]))  # -100: not scored
    assert got.item() == pytest.approx(math.log(0.1)) and n.tolist() == [1]


@pytest.fixture(scope="module")
def echo(tmp_path_factory) -> Path:
    """30 examples: the target is the input's first word."""
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    path = tmp_path_factory.mktemp("spin") / "echo.jsonl"
    rows = []
    for i in range(30):
        w = rng.sample(words, 3)
        rows.append(json.dumps({"input": " ".join(w) + f" {i}", "target": w[0]}))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=["t5-debug", "decoder-tiny"])
def sft_run(request, echo, tmp_path_factory) -> Path:
    """A few steps of fine-tuning: the run SPIN starts from."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("sft") / request.param
    cfg = FinetuneConfig(
        init=request.param,
        task=TaskConfig(train_file=str(echo), val_fraction=0.2),
        optim=OptimConfig(lr=3e-3, warmup_steps=1, weight_decay=0.0),
        train=FinetuneTrainConfig(steps=4, batch_size=8, eval_every=4, eval_examples=0, score_initial=False),
        runtime=RuntimeConfig(device="cpu", precision="fp32"),
    )
    finetune(cfg, out, progress=False)
    return out


def _spin_cfg(run: Path, **train) -> SpinConfig:
    settings = dict(iterations=2, steps=3, batch_size=4, max_new_tokens=6, gen_batch_size=8, eval_examples=0)
    settings.update(train)
    return SpinConfig(
        init=str(run),
        optim=OptimConfig(lr=1e-3, warmup_steps=1, weight_decay=0.0, schedule="constant"),
        train=SpinTrainConfig(**settings),
        runtime=RuntimeConfig(device="cpu", precision="fp32"),
    )


def test_opponent_is_frozen_while_the_policy_trains(sft_run, echo, one_thread):
    loaded = ckpt_io.load(sft_run / "best")
    task = resolve_task(str(sft_run), {"train_file": str(echo), "val_fraction": 0.2})
    fmt = TextToText(
        loaded.family, loaded.tokenizer, task.separator, 64, 16, loaded.family.max_len(loaded.model_config)
    )
    policy = loaded.model.train()
    opponent = Opponent(policy, fmt, device=torch.device("cpu"))
    before = {k: v.clone() for k, v in opponent.model.state_dict().items()}
    examples = [Example("alpha beta gamma 1", "alpha"), Example("omega sigma beta 2", "omega")]
    played = opponent.play(examples, max_new_tokens=4, batch_size=2)
    objective = SpinObjective(fmt, beta=0.1, nll_weight=0.5, n_pair=len(fmt.batch(examples[:1])))
    par = distributed.Parallel(mode="none", rank=0, world_size=1, runtime=_cpu_runtime())
    trainer = setup(
        policy,
        OptimConfig(lr=1e-2, warmup_steps=0),
        par,
        run_dir=Path("."),
        nonfinite_skips=0,
        report=lambda row: None,
        progress=False,
    )
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    for step in range(2):
        tensors = objective.batch(examples, played["generated"], played["ref_gold"], played["ref_generated"])
        result = train_step(trainer, objective, [tensors], step=step, lr=1e-2)
        assert result.applied and math.isfinite(float(result.loss))
    assert any(not torch.equal(start[k], v) for k, v in policy.state_dict().items())  # the policy moved
    assert all(torch.equal(before[k], v) for k, v in opponent.model.state_dict().items())  # the opponent did not
    assert all(not p.requires_grad and p.grad is None for p in opponent.model.parameters())
    assert not opponent.model.training
    # The cached reference is the opponent's own score: recomputing it gives the same numbers.
    assert opponent.logprobs(examples, batch_size=2) == played["ref_gold"]


@pytest.mark.parametrize("sft_run", ["decoder-tiny"], indirect=True)
def test_opponent_answers_in_the_decoding_precision_and_scores_in_the_training_one(sft_run, echo, monkeypatch):
    from stlm.finetune import spin

    loaded = ckpt_io.load(sft_run / "best")
    task = resolve_task(str(sft_run), {"train_file": str(echo), "val_fraction": 0.2})
    fmt = TextToText(
        loaded.family, loaded.tokenizer, task.separator, 64, 16, loaded.family.max_len(loaded.model_config)
    )
    seen = []
    generate = spin.generate_predictions

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return generate(*args, **kwargs)

    monkeypatch.setattr(spin, "generate_predictions", spy)
    bf16 = resolve_runtime(RuntimeConfig(device="cpu", precision="bf16"), probe_cache=None)
    opponent = Opponent(
        loaded.model, fmt, device=torch.device("cpu"), autocast=bf16.autocast, decode_autocast=_cpu_runtime().autocast
    )
    examples = [Example("alpha beta gamma 1", "alpha"), Example("omega sigma beta 2", "omega")]
    played = opponent.play(examples, max_new_tokens=4, batch_size=2)
    assert seen == [False]  # the answers: fp32
    with bf16.autocast():  # the reference log-probs: the training precision, as the policy's are scored
        lp, _ = fmt.family.pair_logprobs(opponent.model, *fmt.batch(examples))
    assert played["ref_gold"] == [float(v) for v in lp.float()]


def _cpu_runtime():
    return resolve_runtime(RuntimeConfig(device="cpu", precision="fp32"))


@pytest.mark.parametrize("sft_run", ["t5-debug"], indirect=True)  # the loop is family-blind; one family keeps it short
def test_spin_reads_no_task_file_the_run_names(sft_run):
    """The fine-tuned run's own files are paths its checkpoint names: SPIN asks for them by name."""
    with pytest.raises(UserError, match="stlm reads no path a checkpoint names: give SPIN its data with --train"):
        resolve_task(str(sft_run), {})


def test_spin_resume_is_exact(sft_run, echo, tmp_path, one_thread):
    full = spin(
        _spin_cfg(sft_run),
        resolve_task(str(sft_run), {"train_file": str(echo), "val_fraction": 0.2}),
        tmp_path / "full",
        progress=False,
    )
    assert [row["iteration"] for row in full.results["iterations"]] == [0, 1, 2]
    assert all(0.0 <= row["val_reward_accuracy"] <= 1.0 for row in full.results["iterations"][1:])
    assert (tmp_path / "full" / "opponent" / "iter-2.json").exists()
    # Stopped mid-iteration 2 (step 4 of 6), then resumed: the cached opponent answers carry on.
    part = tmp_path / "part"
    stopped = spin(
        _spin_cfg(sft_run),
        resolve_task(str(sft_run), {"train_file": str(echo), "val_fraction": 0.2}),
        part,
        stop_at=4,
        progress=False,
    )
    assert stopped.step == 4 and not (part / "results.json").exists()
    with pytest.raises(UserError, match="resume with --train"):
        spin(None, None, part, resume=True, progress=False)
    resumed = spin(None, None, part, resume=True, overrides={"task.train_file": str(echo)}, progress=False)
    assert resumed.results["iterations"] == full.results["iterations"]
    a, b = ckpt_io.load(full.checkpoint).model.state_dict(), ckpt_io.load(resumed.checkpoint).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_spin_trains_with_the_dropout_it_is_given(sft_run, echo, tmp_path, one_thread):
    start = ckpt_io.load(sft_run / "best")
    assert start.model_config.dropout != 0.25
    cfg = dataclasses.replace(_spin_cfg(sft_run, iterations=1, steps=1), dropout=0.25)
    task = resolve_task(str(sft_run), {"train_file": str(echo), "val_fraction": 0.2})
    result = spin(cfg, task, tmp_path / "d", stop_at=1, progress=False)
    after = ckpt_io.load(result.checkpoint)
    assert after.model_config == dataclasses.replace(start.model_config, dropout=0.25)
    # The same weights went in: SPIN's one step moved them from the fine-tuned run's, not from a new init.
    a, b = start.model.state_dict(), after.model.state_dict()
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 0.05
    # A resumed run keeps it (its checkpoint records it); a new dropout on resume is refused.
    with pytest.raises(UserError, match="dropout"):
        spin(None, None, tmp_path / "d", resume=True, overrides={"task.train_file": str(echo), "dropout": 0.1})
    with pytest.raises(UserError, match="dropout must be a number in"):
        dataclasses.replace(cfg, dropout=1.5)


def test_spin_on_a_run_without_a_task_is_one_line(tmp_path, capsys):
    family, cfg = registry.resolve_model("decoder-tiny")
    record = ckpt_io.RunRecord(family, cfg, {"name": "byte"}, {"run": {"model": "decoder-tiny"}})
    pretrained = tmp_path / "pretrained"
    ckpt_io.save_checkpoint(
        pretrained, 1, model=family.build(cfg), optimizer=None, config=record, state={"step": 1}, keep=1
    )
    out = tmp_path / "spin"
    assert main(["spin", str(pretrained), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a fine-tuned run" in err and "--task NAME or --train FILE" in err
    assert not out.exists()
    assert main(["spin", "--out", str(out)]) == 2  # no run at all
    assert "name the fine-tuned run" in capsys.readouterr().err
    assert not out.exists()
