"""Fine-tuning goes through the shared training step, so it honours every runtime option:
compile, activation checkpointing, the fp16 gradient scaler, and the non-finite skip policy."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stlm import checkpoint as ckpt_io
from stlm.errors import UserError
from stlm.finetune.format import TextToText
from stlm.finetune.loop import finetune

from .test_finetune_run import _cfg


@pytest.fixture(scope="module")
def even(tmp_path_factory) -> Path:
    """32 examples of one shape: 16-byte inputs, 3-byte labels, so every batch has the same width."""
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("ft") / "even.jsonl"
    rows = []
    for i in range(32):
        label = rng.choice(["hot", "icy"])
        words = "sun fire" if label == "hot" else "snow ice"
        rows.append(json.dumps({"text": f"{words:<9} {i:06d}", "label": label}))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _train_losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(ckpt / "model.safetensors")


def _poison(monkeypatch, bad_calls) -> None:
    """Make the training loss (gradients on) NaN on the given 1-based calls; evaluation is untouched."""
    original, calls = TextToText.loss, {"n": 0}

    def loss(self, model, *tensors):
        value = original(self, model, *tensors)
        if not torch.is_grad_enabled():
            return value
        calls["n"] += 1
        return value * float("nan") if bad_calls(calls["n"]) else value

    monkeypatch.setattr(TextToText, "loss", loss)


def test_activation_checkpointing_gives_identical_training(even, tmp_path, monkeypatch, one_thread):
    import torch.utils.checkpoint as activation

    original, calls = activation.checkpoint, {"n": 0}

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(activation, "checkpoint", counting)
    settings = {"steps": 4, "eval_every": 4, "batch_size": 4, "score_initial": False, "max_new_tokens": 3}
    plain = finetune(_cfg(even, **settings), tmp_path / "plain", progress=False)
    assert calls["n"] == 0
    cfg = _cfg(even, **settings)
    cfg.runtime.activation_checkpointing = True
    checkpointed = finetune(cfg, tmp_path / "ckpt", progress=False)
    assert calls["n"] >= 4 * 4  # every block recomputed in every step (decoder-tiny has 4)
    assert _train_losses(tmp_path / "plain") == _train_losses(tmp_path / "ckpt")
    a, b = _weights(plain.best_checkpoint), _weights(checkpointed.best_checkpoint)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert plain.results["finetuned"]["loss"] == checkpointed.results["finetuned"]["loss"]


@pytest.fixture(scope="module")
def one_layer(tmp_path_factory) -> Path:
    """A 1-layer, 32-wide byte decoder saved as a run to fine-tune from: compiling it takes seconds."""
    from stlm import registry
    from stlm.models.decoder import DecoderConfig
    from stlm.tokenizers import ByteTokenizer

    torch.manual_seed(0)
    cfg = DecoderConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=64)
    family = registry.get_family("decoder")
    run = tmp_path_factory.mktemp("init") / "one-layer"
    record = ckpt_io.RunRecord(family, cfg, ByteTokenizer().to_dict(), {})
    ckpt_io.save_checkpoint(run, 0, model=family.build(cfg), optimizer=None, config=record, state={}, keep=1)
    return run


@pytest.mark.slow  # inductor compiling forward + backward: 20-50 s on 2 CPU cores
def test_compile_is_applied_and_trains_like_eager(even, one_layer, tmp_path, monkeypatch, one_thread):
    compiled = []
    original = torch.nn.Module.compile

    def spy(self, *args, **kwargs):
        compiled.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", spy)
    settings = {
        "init": str(one_layer),
        "steps": 3,
        "eval_every": 3,
        "batch_size": 4,
        "score_initial": False,
        "max_new_tokens": 3,
    }
    eager = finetune(_cfg(even, **settings), tmp_path / "eager", progress=False)
    cfg = _cfg(even, **settings)
    cfg.runtime.compile = True
    fast = finetune(cfg, tmp_path / "compiled", progress=False)
    assert compiled == ["DecoderLM"]
    for (s1, l1), (s2, l2) in zip(_train_losses(tmp_path / "eager"), _train_losses(tmp_path / "compiled"), strict=True):
        assert s1 == s2 and l2 == pytest.approx(l1, rel=1e-4)
    # Evaluation (greedy decoding) ran on the same weights, uncompiled.
    assert fast.results["finetuned"]["loss"] == pytest.approx(eager.results["finetuned"]["loss"], rel=1e-3)


def test_fp16_uses_the_scaler_and_resumes_its_state(even, tmp_path, monkeypatch, one_thread):
    _poison(monkeypatch, lambda n: n == 1)  # inf/NaN gradients: the scaler backs off and the step is skipped
    cfg = _cfg(even, steps=4, eval_every=2, batch_size=4, score_initial=False, max_new_tokens=3, keep_checkpoints=2)
    cfg.runtime.precision = "fp16"
    straight = finetune(cfg, tmp_path / "a", progress=False)
    state = json.loads((ckpt_io.latest_checkpoint(tmp_path / "a") / "state.json").read_text())
    assert state["scaler"]["scale"] == 2.0**16 * 0.5  # halved once, by the skipped step
    optimizer = ckpt_io.read_optimizer_state(ckpt_io.latest_checkpoint(tmp_path / "a"))
    assert {int(s["step"]) for s in optimizer["state"].values()} == {3}  # 4 steps, the first skipped
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["consecutive"]) for r in rows if "skipped" in r] == [(1, 1)]

    monkeypatch.undo()
    _poison(monkeypatch, lambda n: n == 1)
    finetune(cfg, tmp_path / "b", progress=False)
    shutil.rmtree(ckpt_io.latest_checkpoint(tmp_path / "b"))  # back to step 2, then resumed
    (tmp_path / "b" / "results.json").unlink()
    monkeypatch.undo()
    resumed = finetune(cfg, tmp_path / "b", resume=True, overrides={"task.train_file": str(even)}, progress=False)
    assert resumed.step == 4
    again = json.loads((ckpt_io.latest_checkpoint(tmp_path / "b") / "state.json").read_text())
    assert again["scaler"] == state["scaler"]  # the scale came back from the checkpoint (a fresh scaler has 2**16)
    a, b = _weights(ckpt_io.latest_checkpoint(tmp_path / "a")), _weights(ckpt_io.latest_checkpoint(tmp_path / "b"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.results["finetuned"]["loss"] == straight.results["finetuned"]["loss"]


def test_nonfinite_loss_skips_the_update_then_continues(even, tmp_path, monkeypatch, one_thread):
    _poison(monkeypatch, lambda n: n in (3, 4))
    result = finetune(
        _cfg(even, steps=6, eval_every=6, batch_size=4, score_initial=False, max_new_tokens=3, log_every=1),
        tmp_path / "run",
        progress=False,
    )
    assert result.step == 6
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["consecutive"]) for r in rows if "skipped" in r] == [(3, 1), (4, 2)]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 5, 6]  # the logged loss is over updates only
    optimizer = ckpt_io.read_optimizer_state(ckpt_io.latest_checkpoint(tmp_path / "run"))
    assert {int(s["step"]) for s in optimizer["state"].values()} == {4}
    assert all(torch.isfinite(t).all() for t in _weights(result.best_checkpoint).values())


def test_nonfinite_loss_too_often_stops_with_a_clear_error(even, tmp_path, one_thread):
    # An infinite learning rate turns the weights to inf/NaN in the first step; every later loss is NaN.
    cfg = _cfg(even, steps=8, eval_every=8, batch_size=4, score_initial=False, max_new_tokens=3, log_every=1)
    cfg.optim.lr = float("inf")
    cfg.train.nonfinite_skips = 2
    with pytest.raises(UserError, match=r"NaN/inf for 3 steps in a row \(up to step 4.*train.nonfinite_skips = 2"):
        finetune(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["consecutive"]) for r in rows if "skipped" in r] == [(2, 1), (3, 2)]


def test_auto_precision_generates_answers_in_the_generate_probes_precision(even, tmp_path, monkeypatch, one_thread):
    # An AMX-like probe: bf16 pays for the training step, not for one-token decoding.
    from stlm.finetune import evaluate as ft_evaluate
    from stlm.runtime import PROBE_CACHE, cache_folder, machine_key

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    probe = {
        "train": {"fp32_s": 1.0, "bf16_s": 0.3, "measured": "2026-12-05"},
        "generate": {"fp32_s": 1.0, "bf16_s": 2.9, "measured": "2026-12-05"},
    }
    cache_folder().mkdir(parents=True)
    (cache_folder() / PROBE_CACHE).write_text(json.dumps({machine_key(): probe}))
    seen = {"generate": set(), "score": set()}
    generate, label_rows = ft_evaluate.generate_predictions, ft_evaluate._label_rows

    def spy_generate(*args, **kwargs):
        seen["generate"].add(torch.is_autocast_enabled("cpu"))
        return generate(*args, **kwargs)

    def spy_rows(*args, autocast, **kwargs):
        with autocast:
            seen["score"].add(torch.is_autocast_enabled("cpu"))
        return label_rows(*args, autocast=autocast, **kwargs)

    monkeypatch.setattr(ft_evaluate, "generate_predictions", spy_generate)
    monkeypatch.setattr(ft_evaluate, "_label_rows", spy_rows)
    cfg = _cfg(even, steps=2, eval_every=2, batch_size=4, score_initial=False, max_new_tokens=3)
    cfg.runtime.precision = "auto"
    finetune(cfg, tmp_path / "run", progress=False)
    assert seen == {"generate": {False}, "score": {True}}  # answers in fp32, the batched scoring in bf16
    header = json.loads((tmp_path / "run" / "config.json").read_text())["header"]
    assert header["device"].startswith("cpu") and header["device"].endswith("answers generated in fp32")
