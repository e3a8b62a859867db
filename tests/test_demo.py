"""`stlm demo` for a token preset: a BPE fitted to the training split, then train, evaluate, sample."""

from __future__ import annotations

import json
import math

import pytest

from stlm.cli.main import main


@pytest.fixture(scope="module")
def bpe_demo(tmp_path_factory, corpus_dir, cache_dir):
    from stlm.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "bpe"
    return run_demo(out, model="bpe-tiny", data=str(corpus_dir), steps=6, device="cpu", cache_dir=str(cache_dir))


def test_bpe_demo_fits_its_tokenizer_and_scores_exact_bytes(bpe_demo, corpus_dir, cache_dir):
    from stlm import checkpoint as ckpt_io
    from stlm.data import prepare_data
    from stlm.tokenizers import BPETokenizer

    out = bpe_demo.run_dir
    tokenizer = BPETokenizer.from_file(out / "tokenizer.json")
    assert tokenizer.vocab_size == 1024
    ckpt = ckpt_io.latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == ckpt_io.checkpoint_name(6)
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["data"]["tokenizer"] == f"bpe:{out / 'tokenizer.json'}"
    assert ckpt_io.read_record(ckpt / "config.json").load_tokenizer().sha256 == tokenizer.sha256
    # Every UTF-8 byte of the (small) validation split is counted once, whatever the tokens.
    val_bytes = prepare_data(str(corpus_dir), tokenizer, cache_dir=str(cache_dir), progress=False).meta["val"]["bytes"]
    assert bpe_demo.val.n_bytes == val_bytes
    assert math.isfinite(bpe_demo.val.bits_per_byte) and 0 < bpe_demo.val.bits_per_byte < 16
    assert bpe_demo.token_unigram_bpb is not None and bpe_demo.token_unigram_bpb < bpe_demo.unigram_bpb
    report = (out / "report.md").read_text()
    assert "6 steps x 16 x 256 tokens" in report and "same tokens, per byte" in report
    assert bpe_demo.sample.startswith("The ")


def test_bpe_demo_refuses_bad_tokenizers_in_one_line(capsys, tmp_path, bpe_demo, corpus_dir, cache_dir):
    fitted = bpe_demo.run_dir / "tokenizer.json"
    before = fitted.stat().st_mtime_ns
    cases = [
        (["--model", "bpe-tiny", "--tokenizer", f"bpe:{tmp_path / 'missing.json'}"], "does not exist"),
        (["--model", "bpe-tiny", "--tokenizer", "byte"], "vocab_size is 1024"),
        (
            ["--model", "bpe-10m", "--tokenizer", f"bpe:{fitted}"],
            "has 1024 ids but the decoder model's vocab_size is 4096",
        ),
        (["--model", "decoder-tiny", "--tokenizer", f"bpe:{fitted}"], "this model reads bytes"),
    ]
    for n, (argv, message) in enumerate(cases):
        out = tmp_path / f"run{n}"
        code = main(
            ["demo", *argv, "--data", str(corpus_dir), "--cache-dir", str(cache_dir), "--steps", "1", "--out", str(out)]
        )
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1 and not out.exists()
    # An existing run is refused before a new tokenizer is fitted over its own.
    code = main(["demo", "--model", "bpe-tiny", "--data", str(corpus_dir), "--out", str(bpe_demo.run_dir)])
    assert code == 2 and "already holds a run" in capsys.readouterr().err
    assert fitted.stat().st_mtime_ns == before


def test_a_demo_stopped_by_a_signal_says_so_reports_so_and_exits_130(
    capsys, tmp_path, corpus_dir, cache_dir, monkeypatch
):
    """SIGTERM mid-run (sent from inside the third batch draw, so no timing): no evaluation, no verdict, how to go on."""
    import os
    import signal

    from stlm.data import WindowLoader

    draw, drawn = WindowLoader.next_batch, []

    def next_batch(self):
        drawn.append(1)
        if len(drawn) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a scheduler would, in the middle of step 3
        return draw(self)

    monkeypatch.setattr(WindowLoader, "next_batch", next_batch)
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--data",
            str(corpus_dir),
            "--cache-dir",
            str(cache_dir),
            "--steps",
            "6",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    captured = capsys.readouterr()
    assert code == 130
    assert "demo interrupted at step 3 of 6" in captured.err and f"stlm train --resume {out}" in captured.err
    assert "learned" not in captured.out and "sample:" not in captured.out
    report = (out / "report.md").read_text()
    assert "**Stopped early, interrupted by a signal, at step 3 of 6.**" in report
    assert "- training: 3 of 6 steps x 16 x 256 bytes" in report
    assert "Learned" not in report and "## Sample" not in report
    reproduce, go_on = report.split("## Reproduce")[1].split("## Continue")
    assert f"stlm demo --model decoder-tiny --data {corpus_dir} --steps 6" in reproduce  # the whole run
    assert (
        f"stlm train --resume {out}" in go_on and f"stlm evaluate {out} --context 256 --stride 128 --max-ids " in go_on
    )
    # Nothing was logged before step 3 (every 10 steps): no plot, and the report does not point at one.
    assert not (out / "loss.png").exists() and "![loss curve]" not in report


def test_run_demo_returns_an_interrupted_report_without_a_verdict(tmp_path, corpus_dir, cache_dir, monkeypatch):
    import functools

    import stlm.demo
    from stlm.training.loop import resume, train

    monkeypatch.setattr(stlm.demo, "train", functools.partial(train, stop_at=2))  # a run that ends early
    report = stlm.demo.run_demo(
        tmp_path / "demo", data=str(corpus_dir), steps=4, device="cpu", cache_dir=str(cache_dir)
    )
    assert report.interrupted and report.step == 2 and not report.learned and report.val is None and report.sample == ""
    assert "Stopped early" in (tmp_path / "demo" / "report.md").read_text()
    # The Continue line works: the run finishes its remaining steps.
    assert resume(tmp_path / "demo", overrides={"data.source": str(corpus_dir)}, progress=False).step == 4
