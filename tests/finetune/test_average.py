"""`stlm average`: checkpoints of one architecture averaged weight by weight (a model soup)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stlm import api
from stlm import checkpoint as ckpt_io
from stlm.cli.main import main
from stlm.finetune import classify
from stlm.tokenizers import ByteTokenizer
from tests.finetune.test_classify import _run
from tests.interop.export_runs import DECODER, save_run


def _weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = ckpt_io.resolve_checkpoint(run / "best" if (run / "best").is_dir() else run)
    return load_file(str(ckpt / "model.safetensors"))


def _average(capsys, *argv) -> tuple[int, str, str]:
    code = main(["average", *(str(a) for a in argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory, colours, one_thread) -> dict[str, Path]:
    """Two fine-tunes of one start on the colours (labels in two orders), one on other labels and
    a channel one."""
    root = tmp_path_factory.mktemp("average-runs")
    weather = root / "weather.jsonl"
    weather.write_text(
        "".join(json.dumps({"text": f"day {i}", "label": "warm" if i % 2 else "cold"}) + "\n" for i in range(40)),
        encoding="utf-8",
    )
    return {
        "a": _run(root / "a", colours),
        "b": _run(root / "b", colours, seed=1, labels="red,blue"),
        "weather": _run(root / "weather", weather),
        "channel": _run(root / "channel", colours, direction="channel"),
    }


def test_weighted_average_is_every_tensor_mixed_and_the_soup_classifies(runs, colours, tmp_path, capsys, one_thread):
    out = tmp_path / "soup"
    code, printed, err = _average(capsys, runs["a"], runs["b"], "--out", out, "--weights", "3", "1")
    assert code == 0, err
    assert "averaged 2 checkpoints (weights 0.75, 0.25)" in printed
    a, b, soup = _weights(runs["a"]), _weights(runs["b"]), _weights(out)
    assert set(soup) == set(a) == set(b)
    assert any(not torch.equal(a[name], b[name]) for name in a)  # two different fine-tunes
    for name, tensor in soup.items():
        expected = (a[name].double() * 0.75 + b[name].double() * 0.25).to(a[name].dtype)
        assert torch.equal(tensor, expected), name
    record = ckpt_io.read_record(ckpt_io.resolve_checkpoint(out) / "config.json")
    first, second = (classify.load_classifier(runs[k], device="cpu", precision="fp32").path for k in "ab")
    assert record.sections["source"] == {
        "averaged": [str(first.resolve()), str(second.resolve())],
        "weights": [0.75, 0.25],
    }
    assert record.sections["task"] == ckpt_io.read_record(first / "config.json").sections["task"]  # the first's
    # The soup is a classification run as the others are: `stlm classify` takes it.
    texts = tmp_path / "in.jsonl"
    texts.write_text('{"input": "sky sea"}\n{"input": "fire apple"}\n', encoding="utf-8")
    cpu = ["--device", "cpu", "--precision", "fp32", "--threads", "1", "--quiet"]
    assert main(["classify", "--model", str(out), "--input", str(texts), "--out", str(tmp_path / "o.jsonl"), *cpu]) == 0
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [set(r["probs"]) for r in rows] == [{"blue", "red"}] * 2
    # And fine-tuning starts from it: its first test loss is a trained model's, not the preset's.
    again = _run(tmp_path / "again", colours, init=str(out))
    untuned = json.loads((runs["a"] / "results.json").read_text())["initial"]["loss"]
    started = json.loads((again / "results.json").read_text())["initial"]["loss"]
    assert started < 0.9 * untuned


def test_averaging_copies_of_one_model_gives_it_back_bit_for_bit(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs["a"], copy)
    run = api.average([runs["a"], copy], tmp_path / "same", weights=[0.3, 0.7])
    assert run.step == 0 and run.checkpoint == ckpt_io.resolve_checkpoint(tmp_path / "same")
    a, same = _weights(runs["a"]), _weights(tmp_path / "same")
    assert all(torch.equal(same[name], a[name]) for name in a)


def test_a_fine_tune_averages_with_its_starting_model(runs, tmp_path):
    """Weight-space interpolation between a start and its fine-tune (no labels on one side) is allowed."""
    start = save_run(tmp_path, "decoder-tiny", {}, ByteTokenizer(), std=0.02)
    run = api.average([runs["a"], start], tmp_path / "mid")
    mid, a, s = _weights(tmp_path / "mid"), _weights(runs["a"]), _weights(start)
    for name in mid:
        assert torch.allclose(mid[name], (a[name] + s[name]) / 2, atol=1e-7)
    assert "task" in ckpt_io.read_record(run.checkpoint / "config.json").sections


def test_mistakes_are_one_line_exit_2_and_write_nothing(runs, tmp_path, capsys):
    out = tmp_path / "out"

    def refused(*argv, says: str) -> None:
        code, _, err = _average(capsys, *argv)
        assert code == 2 and says in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out.exists()

    a, b = runs["a"], runs["b"]
    refused(a, "--out", out, says="at least two runs or checkpoints, got 1")
    refused(a, a, "--out", out, says="are the same checkpoint")
    best = ckpt_io.resolve_checkpoint(a / "best")
    refused(a, best, "--out", out, says="are the same checkpoint")  # a run and its own best checkpoint
    refused(a, b, "--out", out, "--weights", "1", says="one weight per model: 2 models, 1 weights")
    refused(a, b, "--out", out, "--weights", "1", "0", says="weights must be positive numbers, got 1 0")
    refused(a, b, "--out", out, "--weights", "1", "nan", says="weights must be positive numbers")
    refused(a, runs["weather"], "--out", out, says="must share one label set")
    refused(a, runs["channel"], "--out", out, says="with direction 'channel' and")
    wide = save_run(tmp_path / "wide", "decoder-tiny", DECODER, ByteTokenizer(), std=0.02)
    refused(a, wide, "--out", out, says="(model_config differs in d_ff, d_model, max_seq_len, n_layers)")
    refused(a, tmp_path / "nowhere", "--out", out, says="does not exist")
    refused(a, b, "--out", a, says="is the folder this command reads from")
    refused(a, b, "--out", best / "soup", says="which holds checkpoints")
    assert _average(capsys, a, b, "--out", out)[0] == 0
    code, _, err = _average(capsys, a, b, "--out", out)
    assert code == 2 and "already holds checkpoints" in err
