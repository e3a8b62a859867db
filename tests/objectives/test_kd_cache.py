"""The teacher cache (--kd-cache): exact with every id in fp32, within the stated bound with top-K, read back
on later epochs without the teacher, keyed by teacher and temperature, checked files, resume exact."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stlm.errors import UserError
from stlm.models.decoder import DecoderConfig, DecoderLM
from stlm.objectives.distill import Distilled, kd_loss, teacher_logprobs
from stlm.objectives.kd_cache import TeacherCache, cache_key
from stlm.objectives.next_token import IGNORE_INDEX, NextTokenObjective
from stlm.objectives.prompted import pack_prompted
from stlm.tokenizers import ByteTokenizer
from stlm.training.loop import resume, train

from ..conftest import tiny_config

V = 264  # the byte vocabulary


class Spy(torch.nn.Module):
    """A teacher that counts its forward passes."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(ids)


class Prompted:
    """A causal fine-tuning objective: (inputs, labels) as pack_prompted gives them."""

    name = "prompted"

    def logits_targets(self, model, inputs, labels):
        return model(inputs), labels


def models():
    torch.manual_seed(0)
    student = DecoderLM(DecoderConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=32))
    teacher = DecoderLM(DecoderConfig(d_model=48, n_layers=1, n_heads=2, max_seq_len=32)).eval()
    return student, teacher


def store(root: Path, *, temperature=2.0, topk=0, dtype="fp32", teacher="a" * 64) -> TeacherCache:
    key = cache_key(
        teacher_sha256=teacher,
        temperature=temperature,
        topk=topk,
        dtype=dtype,
        vocabulary={"name": "byte"},
        objective="x",
    )
    return TeacherCache(root, key, V, (ByteTokenizer().pad_id, IGNORE_INDEX))


def windows(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 17), generator=torch.Generator().manual_seed(seed))


def test_all_ids_in_fp32_give_the_live_loss_exactly(tmp_path):
    student, teacher = models()
    inner = NextTokenObjective(16, ByteTokenizer().byte_lengths())
    live = Distilled(inner, teacher, alpha=0.5, temperature=2.0)
    cached = Distilled(inner, Spy(teacher), alpha=0.5, temperature=2.0, cache=store(tmp_path))
    batch = windows(3)
    expected = live.loss(student, batch)
    first = cached.loss(student, batch)  # computed and written
    second = cached.loss(student, batch)  # read back
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert cached.teacher.calls == 1 and cached.cache.hits == 3 and cached.cache.misses == 3


def test_topk_and_fp16_stay_within_the_stated_bound(tmp_path):
    student, teacher = models()
    batch = windows(2)
    inputs = batch[:, :-1]
    t = teacher_logprobs(teacher(inputs), 2.0).detach()  # (B, T, V)
    s = torch.log_softmax(student(inputs).detach() / 2.0, dim=-1)
    scored = torch.ones(2, 16, dtype=torch.bool)
    exact = kd_loss(student(inputs).detach(), teacher(inputs).detach(), scored, temperature=2.0)
    for k in (8, 32):
        cache = store(tmp_path / f"k{k}", topk=k)
        approx = cache.decode(cache.encode(t.reshape(-1, V))).reshape(t.shape)
        got = (approx.exp() * (approx - s)).sum(-1).mean() * 4.0
        # per position: r * (log(V - K) + spread of log s over the other ids), averaged, times T^2
        top = t.topk(k, dim=-1).indices
        r = 1 - t.exp().gather(-1, top).sum(-1)  # (B, T)
        tail = s.scatter(-1, top, float("nan"))
        spread = tail.nan_to_num(float("-inf")).amax(-1) - tail.nan_to_num(float("inf")).amin(-1)
        bound = float((r * (math.log(V - k) + spread)).mean() * 4.0)
        assert abs(float(got) - float(exact)) <= bound + 1e-6, (k, float(got), float(exact), bound)
        assert cache.encode(t.reshape(-1, V)).values.shape == (32, k)
    half = store(tmp_path / "fp16", dtype="fp16")
    approx = half.decode(half.encode(t.reshape(-1, V))).reshape(t.shape)
    got = (approx.exp() * (approx - s)).sum(-1).mean() * 4.0
    assert abs(float(got) - float(exact)) <= 1e-3 * float(exact)


def test_later_epochs_read_the_cache_and_never_call_the_teacher(tmp_path):
    student, teacher = models()
    spy = Spy(teacher)
    inner = NextTokenObjective(16, ByteTokenizer().byte_lengths())
    cached = Distilled(inner, spy, alpha=0.5, temperature=2.0, cache=store(tmp_path, dtype="fp16", topk=16))
    w = windows(4)
    epoch1 = [cached.loss(student, w[[0, 1]]), cached.loss(student, w[[2, 3]])]
    assert spy.calls == 2
    epoch2 = [cached.loss(student, w[[3, 0]]), cached.loss(student, w[[1, 2]])]  # another order
    assert spy.calls == 2 and cached.cache.hits == 4
    assert torch.allclose(epoch1[0] + epoch1[1], epoch2[0] + epoch2[1], atol=1e-5)
    # Fine-tuning rows: the same example padded to another batch width finds its file.
    tok = ByteTokenizer()
    ex = [
        (tok.encode("ab", bos=True), tok.encode("cd", eos=True)),
        (tok.encode("a longer prompt", bos=True), [tok.eos_id]),
    ]
    pairs = Distilled(Prompted(), spy, alpha=0.5, temperature=2.0, cache=store(tmp_path / "ft"))
    pairs.loss(student, *pack_prompted(ex, pad_id=tok.pad_id))
    calls = spy.calls
    pairs.loss(student, *pack_prompted(ex[:1], pad_id=tok.pad_id))  # narrower batch, same example
    assert spy.calls == calls and pairs.cache.hits == 1


def test_another_teacher_or_temperature_never_reads_the_cache(tmp_path, capsys):
    student, teacher = models()
    inner = NextTokenObjective(16, ByteTokenizer().byte_lengths())
    batch = windows(2)
    Distilled(inner, Spy(teacher), alpha=0.5, temperature=2.0, cache=store(tmp_path)).loss(student, batch)
    for other in (store(tmp_path, temperature=1.0), store(tmp_path, teacher="b" * 64)):
        spy = Spy(teacher)
        other.announce(True)
        assert "made for another teacher or settings; not read" in capsys.readouterr().err
        Distilled(inner, spy, alpha=0.5, temperature=other.key["temperature"], cache=other).loss(student, batch)
        assert spy.calls == 1 and other.hits == 0
    # A damaged or foreign file in the right place is rejected, recomputed and replaced.
    cache = store(tmp_path)
    files = sorted(cache.folder.glob("rows/*/*.kd"))
    files[0].write_bytes(files[0].read_bytes()[:-2])
    foreign = files[1].read_bytes().replace(cache.digest.encode(), b"0" * 64)
    files[1].write_bytes(foreign)
    spy = Spy(teacher)
    Distilled(inner, spy, alpha=0.5, temperature=2.0, cache=cache).loss(student, batch)
    assert spy.calls == 1 and cache.rejected == 2
    again = store(tmp_path)
    Distilled(inner, spy, alpha=0.5, temperature=2.0, cache=again).loss(student, batch)
    assert spy.calls == 1 and again.hits == 2


def test_cached_run_resumes_exactly_and_reads_later_epochs(tmp_path, cache_dir, tiny_run, one_thread, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"{i}.txt").write_text(f"Document {i}: the teacher's outputs are stored once and read back. " * 2)
    calls = []
    original = Distilled.teacher_logprobs
    monkeypatch.setattr(Distilled, "teacher_logprobs", lambda self, t: calls.append(1) or original(self, t))
    cfg = tiny_config(corpus, cache_dir, steps=20, log_every=1, batch_size=1, eval_tokens=64)
    settings = {"data.seq_len": 32, "data.val_fraction": 0.25, "distill.teacher": str(tiny_run)}
    cfg = cfg.with_overrides({**settings, "distill.cache": str(tmp_path / "kd")})
    straight = train(cfg, tmp_path / "straight", progress=False)
    per_epoch = len(list((tmp_path / "kd").glob("*/rows/*/*.kd")))
    assert 0 < per_epoch < 20 and len(calls) == per_epoch  # later epochs: no teacher pass
    assert (
        train(
            cfg.with_overrides({"distill.cache": str(tmp_path / "kd2")}),
            tmp_path / "resumed",
            stop_at=5,
            progress=False,
        ).step
        == 5
    )
    with pytest.raises(UserError, match="resume with --kd-cache"):
        resume(tmp_path / "resumed", overrides={"data.source": str(corpus), "distill.teacher": str(tiny_run)})
    again = {"data.source": str(corpus), "distill.teacher": str(tiny_run), "distill.cache": str(tmp_path / "kd2")}
    resumed = resume(tmp_path / "resumed", overrides=again, progress=False)
    a, b = (load_file(r.checkpoint / "model.safetensors") for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)

    def losses(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if "loss" in r]

    assert losses("straight") == losses("resumed")
