"""One smoke test per subcommand, and bad input: one line, non-zero exit, no traceback."""

import json
import os
import subprocess
import sys

import pytest

from stlm.cli.main import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_presets_with_exact_counts(capsys):
    from stlm.registry import list_presets

    code, out, _ = run(capsys, "models")
    assert code == 0
    for preset in list_presets():
        assert preset.name in out and f"{preset.n_params:,}" in out


def test_models_parts_show_each_sharing_option_on_or_off_with_its_saving(capsys):
    code, out, _ = run(capsys, "models", "--family", "pooled", "--parts")
    assert code == 0
    row = next(line for line in out.splitlines()[::-1] if line.startswith("pooled-tiny "))  # the savings table's row
    # pooled-tiny: V 264, Dl 64, Dg 128, Fg 384, 3 core blocks, head tied, FFN unshared, no repeats.
    block = 4 * 128 * 128 + 2 * 128 + 3 * 128 * 384
    assert row.split()[1:] == [
        "on:",
        f"{264 * 64:,}",
        "off",
        f"({2 * 3 * 128 * 384:,})",
        "off",
        f"({3 * block:,})",
        f"{264 * 64:,}",
    ]


def test_corpora(capsys):
    code, out, _ = run(capsys, "corpora")
    assert code == 0 and "pydocs" in out and "shakespeare" in out


def test_prepare(capsys, corpus_dir, cache_dir):
    code, out, _ = run(capsys, "prepare", "--data", corpus_dir, "--cache-dir", cache_dir)
    assert code == 0 and "train" in out and "unigram" in out


def test_train_stop_and_resume(capsys, tmp_path, corpus_dir, cache_dir):
    out_dir = tmp_path / "run"
    common = [
        "--model",
        "decoder-tiny",
        "--data",
        corpus_dir,
        "--cache-dir",
        cache_dir,
        "--seq-len",
        32,
        "--batch-size",
        2,
        "--steps",
        4,
        "--device",
        "cpu",
        "--set",
        "train.log_every=1",
        "--quiet",
    ]
    code, out, _ = run(capsys, "train", *common, "--out", out_dir, "--stop-at", 2)
    assert code == 0 and "step 2" in out
    code, out, _ = run(capsys, "train", "--resume", out_dir, "--data", corpus_dir, "--quiet")
    assert code == 0 and "step 4" in out
    steps = [json.loads(l)["step"] for l in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps] == sorted(steps) and steps[-1] == 4


def test_train_from_recipe_and_malformed_recipe(capsys, tmp_path, corpus_dir, cache_dir):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'model = "decoder-tiny"\n[data]\nsource = "{corpus_dir}"\nseq_len = 32\ncache_dir = "{cache_dir}"\n'
        '[train]\nsteps = 2\nbatch_size = 2\n[runtime]\ndevice = "cpu"\n',
        encoding="utf-8",
    )
    code, out, _ = run(capsys, "train", "--config", recipe, "--out", tmp_path / "run", "--quiet")
    assert code == 0 and "step 2" in out
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["run"]["data"]["seq_len"] == 32 and saved["header"]["versions"]["torch"]
    recipe.write_text("[train]\nsteps = 'many'\n", encoding="utf-8")
    code, _, err = run(capsys, "train", "--config", recipe, "--out", tmp_path / "run2")
    assert code == 2 and "train.steps must be int" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run2").exists()


def test_evaluate_split_and_file(capsys, tiny_run, tmp_path, corpus_dir):
    code, out, _ = run(
        capsys, "evaluate", tiny_run, "--data", corpus_dir, "--max-ids", 2000, "--context", 64, "--stride", 32
    )
    assert code == 0 and "bits per byte" in out and "context 64, stride 32" in out
    text = tmp_path / "t.txt"
    text.write_text("héllo wörld\n" * 20, encoding="utf-8")
    result = tmp_path / "r.json"
    code, out, _ = run(capsys, "evaluate", tiny_run, "--file", text, "--json", result)
    assert code == 0
    assert json.loads(result.read_text())["details"]["n_bytes"] == len(text.read_text(encoding="utf-8").encode("utf-8"))


def test_generate_streams_text(capsys, tiny_run):
    code, out, _ = run(capsys, "generate", tiny_run, "--prompt", "The ", "--max-new-bytes", 20, "--seed", 1)
    assert code == 0 and out.startswith("The ")
    code, greedy1, _ = run(capsys, "generate", tiny_run, "--prompt", "a", "--max-new-bytes", 10, "--greedy")
    code, greedy2, _ = run(capsys, "generate", tiny_run, "--prompt", "a", "--max-new-bytes", 10, "--greedy")
    assert greedy1 == greedy2


def test_demo_end_to_end(capsys, tmp_path, corpus_dir, cache_dir):
    out_dir = tmp_path / "demo"
    code, out, _ = run(
        capsys,
        "demo",
        "--data",
        corpus_dir,
        "--cache-dir",
        cache_dir,
        "--steps",
        60,
        "--out",
        out_dir,
        "--device",
        "cpu",
    )
    assert code == 0, out
    assert "order-0 (unigram)" in out and "learned" in out
    for name in ("config.json", "metrics.jsonl", "loss.png", "report.md"):
        assert (out_dir / name).is_file(), name
    assert (out_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Validation bits per byte" in (out_dir / "report.md").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "no-such-model", "--steps", "1"], "unknown"),
        (["train", "--model", "runs/no-such-run", "--steps", "1"], "no run folder or checkpoint at 'runs/no-such-run'"),
        (["finetune", "--task", "docstring-topic", "--model", "./gone"], "no run folder or checkpoint at './gone'"),
        (["train", "--data", "/no/such/file.txt", "--steps", "1"], "does not exist"),
        (["train", "--config", "/no/such/recipe.toml"], "does not exist"),
        (["train", "--set", "optim.nope=1"], "unknown setting"),
        (["evaluate", "/no/such/run"], "does not exist"),
        (["generate", "/no/such/run"], "does not exist"),
        (["prepare", "--data", "no-such-corpus"], "pydocs"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, tmp_path, argv, message):
    code, out, err = run(capsys, *argv, *(["--cache-dir", tmp_path] if argv[0] in ("train", "prepare") else []))
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_empty_corpus_and_non_utf8_file(capsys, tmp_path, tiny_run):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "prepare", "--data", empty, "--cache-dir", tmp_path / "c")
    assert code == 2 and len(err.strip().splitlines()) == 1
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"ok \xff\xfe bad")
    code, _, err = run(capsys, "evaluate", tiny_run, "--file", binary)
    assert code == 2 and "not UTF-8" in err


def test_corrupt_checkpoint_is_refused_and_left_alone(capsys, tmp_path, tiny_run):
    import shutil

    run_copy = tmp_path / "copy"
    shutil.copytree(tiny_run, run_copy)
    ckpt = sorted((run_copy / "checkpoints").iterdir())[-1]
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    code, _, err = run(capsys, "generate", ckpt, "--max-new-bytes", 5)
    assert code == 2 and "truncated" in err
    assert weights.stat().st_size == 50  # nothing rewritten
    (ckpt / "config.json").write_text("{not json")
    code, _, err = run(capsys, "evaluate", ckpt)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_console_script_runs_without_traceback():
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    # Both interpreters start side by side: their imports are most of the time.
    bad, help_ = (
        subprocess.Popen(
            [sys.executable, "-m", "stlm", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for argv in (["train", "--model", "nope"], ["--help"])
    )
    (_, bad_err), (help_out, _) = bad.communicate(timeout=300), help_.communicate(timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad_err and "nope" in bad_err
    assert help_.returncode == 0 and "demo" in help_out


def test_pretrain_t5_then_generate(capsys, tmp_path, corpus_dir, cache_dir):
    run_dir = tmp_path / "t5"
    code, out, err = run(
        capsys,
        "pretrain",
        "--model",
        "t5-debug",
        "--objective",
        "span-corruption",
        "--data",
        corpus_dir,
        "--cache-dir",
        cache_dir,
        "--seq-len",
        64,
        "--batch-size",
        2,
        "--steps",
        2,
        "--optimizer",
        "adamw-rms",
        "--lr",
        "2e-2",
        "--device",
        "cpu",
        "--out",
        run_dir,
        "--quiet",
    )
    assert code == 0 and "val_loss" in out, err
    code, out, _ = run(capsys, "generate", run_dir, "--prompt", "The quick", "--max-new-bytes", 8, "--greedy")
    assert code == 0
    code, _, err = run(capsys, "evaluate", run_dir)
    assert code == 2 and "encoder-decoder" in err
    items = tmp_path / "mc.jsonl"
    items.write_text(
        json.dumps({"context": "The sky is", "choices": ["blue.", "green."], "gold": 0}) + "\n", encoding="utf-8"
    )
    code, out, err = run(capsys, "evaluate", run_dir, "--task", f"mc:{items}", "--quiet")
    assert code == 0 and "over 1 items" in out, err
    assert (
        json.loads(next((run_dir / "evals").glob("mc-mc-*.json")).read_text())["provenance"]["model"]["family"] == "t5"
    )
    code, _, err = run(
        capsys,
        "train",
        "--model",
        "t5-debug",
        "--data",
        corpus_dir,
        "--cache-dir",
        cache_dir,
        "--steps",
        1,
        "--out",
        tmp_path / "x",
    )
    assert code == 2 and "span-corruption" in err


def test_bpe_baseline_trains_evaluates_and_generates(capsys, tmp_path, corpus_dir, cache_dir):
    """train-tokenizer -> train bpe-tiny -> evaluate/generate from the checkpoint alone (tokenizer file deleted)."""
    tok = tmp_path / "tok.json"
    code, out, _ = run(
        capsys, "train-tokenizer", "--data", corpus_dir, "--cache-dir", cache_dir, "--vocab-size", 1024, "--out", tok
    )
    assert code == 0 and "1024 ids (1021 pieces" in out
    run_dir = tmp_path / "bpe"
    code, out, _ = run(
        capsys,
        "train",
        "--model",
        "bpe-tiny",
        "--tokenizer",
        f"bpe:{tok}",
        "--data",
        corpus_dir,
        "--cache-dir",
        cache_dir,
        "--seq-len",
        32,
        "--batch-size",
        2,
        "--steps",
        2,
        "--device",
        "cpu",
        "--set",
        "train.eval_tokens=256",
        "--out",
        run_dir,
        "--quiet",
    )
    assert code == 0 and "val_bpb" in out
    tok.unlink()
    text = tmp_path / "t.txt"
    text.write_text("héllo wörld ✓\n" * 10, encoding="utf-8")
    result = tmp_path / "r.json"
    code, out, _ = run(capsys, "evaluate", run_dir, "--file", text, "--context", 16, "--json", result)
    assert code == 0 and json.loads(result.read_text())["details"]["n_bytes"] == len(
        text.read_text(encoding="utf-8").encode("utf-8")
    )
    code, out, _ = run(capsys, "generate", run_dir, "--prompt", "The ", "--max-new-bytes", 5, "--seed", 1)
    assert code == 0 and out.startswith("The ")
    code, _, err = run(
        capsys,
        "train",
        "--model",
        "bpe-tiny",
        "--data",
        corpus_dir,
        "--cache-dir",
        cache_dir,
        "--steps",
        1,
        "--out",
        tmp_path / "no-tok",
        "--quiet",
    )
    assert code == 2 and "--tokenizer bpe:" in err and len(err.strip().splitlines()) == 1
