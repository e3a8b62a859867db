"""Knowledge distillation: the KL by hand, zero gradient at equality, tokenizer check, resume exact."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from stlm.cli.main import main
from stlm.errors import UserError
from stlm.objectives.distill import Distilled, kd_loss
from stlm.objectives.next_token import NextTokenObjective
from stlm.tokenizers import ByteTokenizer
from stlm.training.loop import resume, train

from ..conftest import tiny_config


def softmax(xs, t):
    e = [math.exp(x / t) for x in xs]
    return [v / sum(e) for v in e]


def test_kd_loss_is_the_kl_by_hand():
    student = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]]
    teacher = [[0.0, 2.0, 0.0], [1.0, -1.0, 0.0]]
    t = 2.0
    forward = reverse = 0.0
    for s_row, t_row in zip(student, teacher):
        p, q = softmax(t_row, t), softmax(s_row, t)
        forward += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) / 2
        reverse += sum(qi * math.log(qi / pi) for pi, qi in zip(p, q)) / 2
    s, te = torch.tensor(student), torch.tensor(teacher)
    scored = torch.tensor([True, True])
    torch.testing.assert_close(kd_loss(s, te, scored, temperature=t), torch.tensor(forward * t * t))
    torch.testing.assert_close(kd_loss(s, te, scored, temperature=t, reverse=True), torch.tensor(reverse * t * t))
    # An unscored position adds nothing.
    padded = kd_loss(torch.cat([s, te[:1]]), torch.cat([te, s[:1]]), torch.tensor([True, True, False]), temperature=t)
    torch.testing.assert_close(padded, torch.tensor(forward * t * t))


@pytest.mark.parametrize("reverse", [False, True])
def test_gradient_is_zero_when_the_student_is_the_teacher(reverse):
    logits = torch.randn(2, 5, 264, generator=torch.Generator().manual_seed(0))
    student = logits.clone().requires_grad_(True)
    loss = kd_loss(student, logits, torch.ones(2, 5, dtype=torch.bool), temperature=2.0, reverse=reverse)
    loss.backward()
    assert abs(float(loss.detach())) < 1e-6 and float(student.grad.abs().max()) < 1e-7


def test_distilled_mixes_hard_and_soft_losses():
    torch.manual_seed(0)
    from stlm.models.decoder import DecoderConfig, DecoderLM

    student, teacher = (DecoderLM(DecoderConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=32)) for _ in range(2))
    inner = NextTokenObjective(16, ByteTokenizer().byte_lengths())
    window = torch.randint(0, 256, (2, 17))
    hard = inner.loss(student, window)
    soft = kd_loss(
        student(window[:, :-1]), teacher(window[:, :-1]), torch.ones(2, 16, dtype=torch.bool), temperature=2.0
    )
    mixed = Distilled(inner, teacher, alpha=0.25, temperature=2.0).loss(student, window)
    torch.testing.assert_close(mixed, 0.75 * hard + 0.25 * soft)
    assert not any(p.grad is not None for p in teacher.parameters())


def test_teacher_with_another_tokenizer_is_one_line_and_writes_nothing(tmp_path, tiny_run, capsys):
    out = tmp_path / "student"
    code = main(
        [
            "train",
            "--model",
            "t5-debug",
            "--objective",
            "span-corruption",
            "--teacher",
            str(tiny_run),
            "--steps",
            "2",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "same tokenizer" in err
    assert not out.exists() or not any(out.iterdir())


def test_distilled_resume_equals_uninterrupted(tmp_path, corpus_dir, cache_dir, tiny_run, one_thread):
    """A pooled student of a decoder teacher; resumed weights and losses equal the straight run's."""
    cfg = tiny_config(corpus_dir, cache_dir, steps=4, log_every=1, batch_size=2, eval_tokens=256)
    cfg = cfg.with_overrides(
        {"model": "pooled-tiny", "data.seq_len": 32, "distill.teacher": str(tiny_run), "distill.alpha": 0.7}
    )
    straight = train(cfg, tmp_path / "straight", progress=False)
    assert train(cfg, tmp_path / "resumed", stop_at=2, progress=False).interrupted
    with pytest.raises(UserError, match="stlm reads no path a checkpoint names: resume with --teacher"):
        resume(tmp_path / "resumed", overrides={"data.source": str(corpus_dir)}, progress=False)
    again = {"data.source": str(corpus_dir), "distill.teacher": str(tiny_run)}
    resumed = resume(tmp_path / "resumed", overrides=again, progress=False)
    a = load_file(straight.checkpoint / "model.safetensors")
    b = load_file(resumed.checkpoint / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key

    def losses(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if "loss" in r]

    assert losses("straight") == losses("resumed")
    record = json.loads((resumed.checkpoint / "config.json").read_text())
    assert record["distill"]["weights_sha256"]
    # Another teacher (same tokenizer, other weights) is refused on resume: the run continues against its own.
    with pytest.raises(UserError, match="not the teacher this run was trained with"):
        resume(tmp_path / "resumed", overrides={**again, "distill.teacher": str(tmp_path / "straight")}, progress=False)
