"""The public Python API: load, generate, score, bits per byte, evaluate, train; errors are the CLI's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

import stlm
from stlm import api
from stlm.cli.main import main


def cli_error(capsys, *argv) -> str:
    """The message of a one-line CLI error, without its `stlm <command>: error: ` prefix."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    prefix = f"stlm {argv[0]}: error: "
    assert err.startswith(prefix), err
    return err[len(prefix) :]


@pytest.fixture(scope="module")
def model(tiny_run, one_thread):
    return stlm.load(tiny_run, device="cpu")


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory):
    """A randomly initialised t5-debug checkpoint (ByT5 bytes): enough to test decoding paths."""
    from stlm import checkpoint as ckpt_io
    from stlm import registry

    torch.manual_seed(0)
    family, cfg = registry.resolve_model("t5-debug")
    run = tmp_path_factory.mktemp("t5") / "run"
    record = ckpt_io.RunRecord(family, cfg, {"name": "byt5"}, {"run": {"model": "t5-debug"}})
    ckpt_io.save_checkpoint(run, 0, model=family.build(cfg), optimizer=None, config=record, state={"step": 0}, keep=1)
    return run


def test_import_stlm_is_light_and_names_the_api():
    code = "import sys, stlm; print('torch' in sys.modules, sorted(set(stlm.__all__) - set(dir(stlm))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "[]"]
    from stlm.errors import UserError

    assert stlm.UserError is UserError
    assert stlm.load is api.load and stlm.train is api.train and stlm.Model is api.Model
    with pytest.raises(AttributeError):
        stlm.no_such_name  # noqa: B018


def test_generate_is_the_cli_output_and_streams_the_same_text(model, tiny_run, capsys):
    text = model.generate("a", max_new_bytes=12, greedy=True)
    assert isinstance(text, str) and text == model.generate("a", max_new_tokens=12, greedy=True)
    assert "".join(model.generate("a", max_new_bytes=12, greedy=True, stream=True)) == text
    assert (
        main(["generate", str(tiny_run), "--prompt", "a", "--max-new-bytes", "12", "--greedy", "--device", "cpu"]) == 0
    )
    assert capsys.readouterr().out == "a" + text + "\n"
    sampled = model.generate("The ", max_new_bytes=20, seed=3)
    assert sampled == model.generate("The ", max_new_bytes=20, seed=3, temperature=0.8)  # 0.8 is the default


def test_score_and_bits_per_byte_match_the_evaluation_code(model, tiny_run, tmp_path, capsys):
    from stlm.evaluation.scoring import score_continuations

    pairs = [("The sky is", " blue."), ("", "Hello.")]
    direct = score_continuations(model.module, model.tokenizer, model.family, pairs)
    assert model.score(pairs) == pytest.approx([d.logprob for d in direct], abs=1e-5)
    assert model.score(["Hello."])[0] == pytest.approx(direct[1].logprob, abs=1e-5)
    assert model.score([("x", "")]) == [0.0]

    text = "héllo wörld, the quick brown fox\n" * 8
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    result = tmp_path / "r.json"
    assert (
        main(
            [
                "evaluate",
                str(tiny_run),
                "--file",
                str(path),
                "--context",
                "64",
                "--stride",
                "32",
                "--json",
                str(result),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    expected = json.loads(result.read_text())["metrics"]["bits_per_byte"]
    assert model.bits_per_byte(text, context=64, stride=32) == pytest.approx(expected, rel=1e-6)
    assert model.evaluate("bpb", file=path, context=64, stride=32).metrics["bits_per_byte"] == pytest.approx(
        expected, rel=1e-6
    )


def test_api_errors_are_user_errors_with_the_cli_message(model, tiny_run, tmp_path, capsys):
    cases = [
        (lambda: stlm.load(tmp_path / "none"), ["generate", tmp_path / "none"]),
        (lambda: model.generate("a", top_k=0), ["generate", tiny_run, "--top-k", "0"]),
        (lambda: model.generate("a", num_beams=2), ["generate", tiny_run, "--num-beams", "2"]),
        (lambda: model.generate("a", max_new_bytes=0), ["generate", tiny_run, "--max-new-bytes", "0"]),
        (lambda: model.evaluate("hellaswag"), ["evaluate", tiny_run, "--task", "hellaswag"]),
        (lambda: model.evaluate("wikitext2", limit=5), ["evaluate", tiny_run, "--task", "wikitext2", "--limit", "5"]),
        (
            lambda: stlm.train({"model": "no-such-model"}, out=tmp_path / "a"),
            ["train", "--model", "no-such-model", "--out", tmp_path / "a"],
        ),
        (
            lambda: stlm.train(out=tmp_path / "b", **{"optim.nope": 1}),
            ["train", "--set", "optim.nope=1", "--out", tmp_path / "b"],
        ),
        (lambda: stlm.train(tmp_path / "none.toml"), ["train", "--config", tmp_path / "none.toml"]),
    ]
    for call, argv in cases:
        with pytest.raises(stlm.UserError) as err:
            call()
        assert str(err.value) == cli_error(capsys, *argv, *(["--device", "cpu"] if argv[0] == "generate" else []))
    with pytest.raises(stlm.UserError, match="encoder-decoders"):
        model.generate("a", num_beams=2)
    for bad in (
        lambda: model.generate("a", greedy=True, temperature=0.5),
        lambda: model.score("one text"),
        lambda: model.evaluate("bpb", no_such_option=1),
        lambda: model.generate("a", max_new_tokens=3, max_new_bytes=4),
    ):
        with pytest.raises(stlm.UserError):
            bad()


def test_beam_search_through_the_t5_family_row(t5_run, capsys):
    from stlm.generation.seq2seq import generate_seq2seq

    m = stlm.load(t5_run, device="cpu")
    ids = m.family.prompt_ids(m.tokenizer, "The quick")
    beams = generate_seq2seq(m.module, ids, max_new_tokens=6, num_beams=3, eos_id=m.tokenizer.eos_id)
    text = m.generate("The quick", max_new_tokens=6, num_beams=3)
    assert text == m.tokenizer.decode_bytes(beams).decode("utf-8", errors="replace")
    assert main(["generate", str(t5_run), "--prompt", "The quick", "--max-new-tokens", "6", "--num-beams", "3"]) == 0
    assert capsys.readouterr().out == text + "\n"  # an encoder-decoder does not repeat its prompt
    with pytest.raises(stlm.UserError, match="beam search is deterministic"):
        m.generate("x", num_beams=3, temperature=0.7)


def test_train_resume_and_load(tmp_path, corpus_dir, cache_dir, one_thread):
    settings = {
        "data": {"source": str(corpus_dir), "seq_len": 32, "cache_dir": str(cache_dir)},
        "train": {"steps": 4, "batch_size": 2, "eval_tokens": 256},
        "runtime": {"device": "cpu"},
    }
    run = stlm.train(
        {"model": "decoder-tiny", **settings},
        out=tmp_path / "run",
        stop_at=2,
        progress=False,
        optim={"warmup_steps": 1},
    )
    assert isinstance(run, stlm.Run) and run.step == 2 and run.interrupted and run.checkpoint.name == "step-00000002"
    with pytest.raises(stlm.UserError, match="optim.lr cannot change"):
        stlm.train(resume=run.dir, optim={"lr": 1.0})
    with pytest.raises(stlm.UserError, match="pass no config or out"):
        stlm.train(settings, resume=run.dir)
    resumed = stlm.train(resume=run.dir, train={"steps": 5}, data={"source": str(corpus_dir)}, progress=False)
    assert resumed.step == 5 and not resumed.interrupted and "val_bpb" in resumed.val
    saved = json.loads((resumed.checkpoint / "config.json").read_text())
    assert saved["run"]["train"]["steps"] == 5 and saved["run"]["optim"]["warmup_steps"] == 1
    m = resumed.load(device="cpu")
    assert m.step == 5 and m.n_params == sum(p.numel() for p in m.module.parameters())


def test_import_and_export_hf_t5_refuse_what_they_cannot_do(model, tiny_run, tmp_path):
    with pytest.raises(stlm.UserError, match="not a T5 checkpoint"):
        api.export_hf_t5(tiny_run, tmp_path / "x")
    with pytest.raises(stlm.UserError, match="already holds checkpoints"):
        api.import_hf_t5(tmp_path, tiny_run)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    assert stlm.load(copy, device="cpu").generate("a", max_new_bytes=4, greedy=True) == model.generate(
        "a", max_new_bytes=4, greedy=True
    )
