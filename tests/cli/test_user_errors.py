"""Issue 15's examples of plain mistakes: each is one line on stderr and exit 2, never a traceback or a silent run."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stlm.cli import main as cli
from stlm.cli.main import main

DEEP = "[" * 100_000 + "]" * 100_000


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--stop-at", "-3"], "--stop-at: must be >= 1, got -3"),
        (["evaluate", "RUN", "--max-ids", "-5"], "--max-ids: must be >= 2, got -5"),
        (["evaluate", "RUN", "--max-ids", "1"], "--max-ids: must be >= 2, got 1"),
        (["evaluate", "RUN", "--context", "0"], "--context: must be >= 2, got 0"),
        (["evaluate", "RUN", "--stride", "0"], "--stride: must be >= 1, got 0"),
        (["evaluate", "RUN", "--batch-size", "0"], "--batch-size: must be >= 1"),
        (["demo", "--steps", "0"], "--steps: must be >= 1, got 0"),
        (["train-tokenizer", "--vocab-size", "300", "--min-frequency", "-5", "--out", "t.json"], "--min-frequency"),
        (["generate", "RUN", "--seed", str(2**70)], "--seed: must be >= 0"),
    ],
)
def test_flag_ranges_are_checked_when_parsing(capsys, argv, message):
    code, _, err = run(capsys, *argv)  # RUN need not exist: the flags are refused first
    assert code == 2
    line = one_line(err)
    assert message in line and line.startswith(f"stlm {argv[0]}: error: argument ")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--top-p", "1.5"], "top_p must be None or a number in (0, 1], got 1.5"),
        (["--top-p", "nan"], "top_p must be None or a number in (0, 1]"),
        (["--temperature", "-1"], "temperature must be finite and >= 0"),
        (["--temperature", "inf"], "temperature must be finite and >= 0"),
        (["--top-k", "0"], "top_k"),
        (["--num-beams", "0"], "num_beams"),
        (["--max-new-tokens", "-1"], "max_new_tokens must be an integer >= 1, got -1"),
    ],
)
def test_sampling_settings_out_of_range_are_one_line(capsys, tiny_run, flags, message):
    # Checked by the API (Model.generate), so the CLI and Python callers read the same line.
    code, _, err = run(capsys, "generate", tiny_run, *flags, "--device", "cpu")
    assert code == 2 and message in one_line(err)


@pytest.mark.parametrize(
    "setting, message",
    [
        ("optim.eps=-1", "optim.eps must be in (0, 1)"),
        ("optim.eps=0", "optim.eps must be in (0, 1)"),
        (f"train.seed={2**70}", "train.seed must be in [0, 2**63)"),
        ("train.seed=-1", "train.seed must be in [0, 2**63)"),
        (f"data.split_seed={2**64}", "data.split_seed must fit in 64 bits"),
    ],
)
def test_settings_out_of_range_are_one_line(capsys, tmp_path, setting, message):
    code, _, err = run(capsys, "train", "--set", setting, "--out", tmp_path / "run", "--cache-dir", tmp_path)
    assert code == 2 and message in one_line(err)
    assert not (tmp_path / "run").exists()


def test_prepare_split_seed_beyond_64_bits_and_negative_max_documents(capsys, tmp_path, corpus_dir):
    code, _, err = run(capsys, "prepare", "--data", corpus_dir, "--split-seed", 2**64, "--cache-dir", tmp_path)
    assert code == 2 and "data.split_seed must fit in 64 bits" in one_line(err)
    code, _, err = run(capsys, "prepare", "--data", corpus_dir, "--max-documents", -1, "--cache-dir", tmp_path)
    assert code == 2 and "max_documents must be >= 0" in one_line(err)
    code, _, err = run(capsys, "prepare", "--data", corpus_dir, "--val-fraction", 0.9, "--cache-dir", tmp_path)
    assert code == 2 and "val_fraction must be in (0, 0.5)" in one_line(err)


def test_labels_that_name_no_label_are_refused(capsys, tmp_path):
    code, _, err = run(capsys, "finetune", "--labels", ",,,", "--out", tmp_path / "ft", "--quiet")
    assert code == 2 and "task.labels ',,,' names no label" in one_line(err)


def test_evaluate_out_json_and_stride_are_checked_before_any_work(capsys, tmp_path, tiny_run):
    afile = tmp_path / "afile"
    afile.write_text("keep me", encoding="utf-8")
    code, _, err = run(capsys, "evaluate", tiny_run, "--out", afile, "--quiet")
    assert code == 2 and f"--out {afile} is a file" in one_line(err)
    code, _, err = run(capsys, "evaluate", tiny_run, "--json", tmp_path, "--quiet")
    assert code == 2 and f"--json {tmp_path} is a folder" in one_line(err)
    code, _, err = run(capsys, "evaluate", tiny_run, "--context", 16, "--stride", 32, "--quiet")
    assert code == 2 and "--stride (32) must be at most --context (16)" in one_line(err)
    assert afile.read_text(encoding="utf-8") == "keep me"


def test_cache_dir_naming_a_file_is_one_line(capsys, tmp_path, corpus_dir):
    afile = tmp_path / "afile"
    afile.write_text("keep me", encoding="utf-8")
    code, _, err = run(capsys, "prepare", "--data", corpus_dir, "--cache-dir", afile)
    assert code == 2 and "Not a directory" in one_line(err)
    assert afile.read_text(encoding="utf-8") == "keep me"


def test_deep_json_recipe_jsonl_and_mc_file_are_one_line(capsys, tmp_path, tiny_run):
    recipe = tmp_path / "deep.json"
    recipe.write_text(DEEP, encoding="utf-8")
    code, _, err = run(capsys, "train", "--config", recipe)
    assert code == 2 and f"config file {recipe} is nested too deeply" in one_line(err)
    data = tmp_path / "deep.jsonl"
    data.write_text('{"text": ' + DEEP + "}\n", encoding="utf-8")
    code, _, err = run(capsys, "prepare", "--data", data, "--cache-dir", tmp_path / "cache")
    assert code == 2 and f"{data}:1: JSON nested too deeply" in one_line(err)
    mc = tmp_path / "deep-mc.jsonl"
    mc.write_text('{"context": "x", "choices": ' + DEEP + ', "label": 0}\n', encoding="utf-8")
    code, _, err = run(capsys, "evaluate", tiny_run, "--task", f"mc:{mc}", "--quiet")
    assert code == 2 and f"{mc}:1: JSON nested too deeply" in one_line(err)


def test_finetune_csv_not_utf8_or_with_a_huge_field_is_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"input,target\n\xff\xfe,x\n")
    code, _, err = run(capsys, "finetune", "--train", bad, "--out", tmp_path / "a", "--quiet")
    assert code == 2 and f"{bad} is not UTF-8 text" in one_line(err)
    huge = tmp_path / "huge.csv"
    huge.write_text("input,target\n" + "x" * 200_000 + ",y\n", encoding="utf-8")
    code, _, err = run(capsys, "finetune", "--train", huge, "--out", tmp_path / "b", "--quiet")
    assert code == 2 and "field larger than field limit" in one_line(err)
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"input": "x", "target": ' + DEEP + "}\n", encoding="utf-8")
    code, _, err = run(capsys, "finetune", "--train", deep, "--out", tmp_path / "c", "--quiet")
    assert code == 2 and f"{deep}:1: JSON nested too deeply" in one_line(err)


def test_binary_bpe_file_is_one_line(capsys, tmp_path, corpus_dir):
    binary = tmp_path / "tokenizer.json"
    binary.write_bytes(bytes(range(256)) * 4)
    code, _, err = run(capsys, "prepare", "--data", corpus_dir, "--tokenizer", f"bpe:{binary}", "--cache-dir", tmp_path)
    assert code == 2 and f"{binary} is not a Hugging Face tokenizer.json (not UTF-8" in one_line(err)
    binary.write_text("[1, 2]", encoding="utf-8")
    code, _, err = run(capsys, "prepare", "--data", corpus_dir, "--tokenizer", f"bpe:{binary}", "--cache-dir", tmp_path)
    assert code == 2 and "tokenizer.json" in one_line(err)


def test_a_fifo_as_data_is_refused_not_read(capsys, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, _, err = run(capsys, "prepare", "--data", fifo, "--cache-dir", tmp_path / "cache")  # would block forever
    assert code == 2 and f"{fifo} is not a regular file" in one_line(err)


def test_plot_out_is_the_file_written(capsys, tmp_path, tiny_run):
    code, _, err = run(capsys, "plot", tiny_run, "--out", tmp_path)
    assert code == 2 and f"{tmp_path} is a folder" in one_line(err)
    assert not tmp_path.with_name(tmp_path.name + ".png").exists()
    code, out, _ = run(capsys, "plot", tiny_run, "--out", tmp_path / "curves")
    assert code == 0 and out.strip() == f"wrote {tmp_path / 'curves.png'}"
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_a_prompt_of_bytes_that_are_not_utf8_is_read_as_bytes_by_a_byte_model(capsys, tiny_run):
    from stlm import api

    code, out, err = run(capsys, "generate", tiny_run, "--prompt", "ab\udcffc", "--max-new-tokens", 3, "--seed", 1)
    assert code == 0 and err == "" and out.startswith("ab\ufffdc")
    model = api.load(tiny_run, device="cpu")
    assert model.tokenizer.encode("ab\udcffc") == [*b"ab\xffc"]  # the shell's $'ab\xffc', byte for byte


def test_usage_errors_are_one_line(capsys):
    code, _, err = run(capsys, "train", "--steps", "many")
    assert code == 2
    assert one_line(err) == ("stlm train: error: argument --steps: invalid int value: 'many' (see `stlm train --help`)")


@pytest.mark.parametrize(
    "exc, line",
    [
        (OSError(errno.ENOSPC, "No space left on device", "RESULT"), "cannot write RESULT: No space left on device"),
        (OSError(errno.ENOSPC, "No space left on device"), "cannot write: No space left on device"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "d"), "d: Is a directory"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "f/x"), "f/x: Not a directory"),
        (PermissionError(errno.EACCES, "Permission denied", "p"), "p: Permission denied"),
        (FileExistsError(errno.EEXIST, "File exists", "a", None, "b"), "a -> b: File exists"),
        (UnicodeDecodeError("utf-8", b"ab\xff", 2, 3, "invalid start byte"), "input is not UTF-8 text (byte b'\\xff'"),
        (OverflowError("int too big to convert"), "a number is too large (int too big to convert)"),
        (RecursionError("maximum recursion depth exceeded"), "input is nested too deeply"),
    ],
)
def test_filesystem_decoding_overflow_and_recursion_errors_are_one_line(capsys, monkeypatch, exc, line):
    def fail(args):
        raise exc

    monkeypatch.setattr(cli, "COMMANDS", [c._replace(run=fail) if c.names == ("corpora",) else c for c in cli.COMMANDS])
    code, _, err = run(capsys, "corpora")
    assert code == 2 and one_line(err).startswith(f"stlm corpora: error: {line}")


@pytest.mark.parametrize("exc", [OSError(errno.EIO, "Input/output error"), ValueError("a bug"), KeyError("bug")])
def test_other_errors_keep_their_traceback(capsys, monkeypatch, exc):
    def fail(args):
        raise exc

    monkeypatch.setattr(cli, "COMMANDS", [c._replace(run=fail) if c.names == ("corpora",) else c for c in cli.COMMANDS])
    with pytest.raises(type(exc)):
        main(["corpora"])


def test_a_full_disk_while_writing_an_evaluation_is_one_line_and_leaves_no_half_file(
    capsys, monkeypatch, tmp_path, tiny_run, corpus_dir
):
    real_write = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.parent == tmp_path:
            real_write(self, "{half", encoding="utf-8")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    code, _, err = run(
        capsys, "evaluate", tiny_run, "--out", tmp_path, "--data", corpus_dir, "--max-ids", 300, "--quiet"
    )
    line = one_line(err)
    assert code == 2 and line.startswith(f"stlm evaluate: error: cannot write {tmp_path}/bpb-")
    assert line.endswith(".json: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_plotting_is_one_line(capsys, full_disk, tmp_path, tiny_run):
    import matplotlib.figure

    full_disk(matplotlib.figure.Figure, "savefig")
    code, _, err = run(capsys, "plot", tiny_run, "--out", tmp_path / "c.png")
    assert (
        code == 2 and one_line(err) == f"stlm plot: error: cannot write {tmp_path / 'c.png'}: No space left on device"
    )


def test_a_full_disk_while_preparing_is_one_line_and_leaves_no_partial_cache(capsys, full_disk, tmp_path, corpus_dir):
    from stlm.data import shards

    full_disk(shards, "_write_tokens")
    code, _, err = run(capsys, "prepare", "--data", corpus_dir, "--cache-dir", tmp_path / "cache")
    # prepare has no --quiet: its progress bar comes first, then the one line
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "stlm prepare: error: cannot write: No space left on device"
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_the_console_script_reads_a_non_utf8_argument_as_bytes(tiny_run):
    # What the shell passes for --prompt $'ab\xff': bytes that are not UTF-8 (argv is bytes on POSIX).
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    argv = [sys.executable, "-m", "stlm", "generate", str(tiny_run), "--max-new-tokens", "2", "--seed", "1"]
    proc = subprocess.run([os.fsencode(a) for a in argv] + [b"--prompt", b"ab\xff"], capture_output=True, env=env)
    assert proc.returncode == 0 and proc.stderr == b"" and proc.stdout.startswith("ab\ufffd".encode())


def test_a_full_disk_while_training_is_one_line_and_the_previous_checkpoint_resumes(
    capsys, monkeypatch, full_disk, tmp_path, corpus_dir, cache_dir, one_thread
):
    import json

    import torch

    from stlm import checkpoint as ckpt_io

    from ..conftest import tiny_config

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(tiny_config(corpus_dir, cache_dir, steps=4, save_every=2, eval_tokens=512).to_dict()))
    real_save = full_disk(torch, "save", on_call=2)  # the second checkpoint (step 4)
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", "--config", recipe, "--out", run_dir, "--quiet")
    line = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err
    assert line.startswith("stlm train: error: cannot write") and line.endswith("No space left on device")
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt_io.load(run_dir).step == 2  # the previous checkpoint loads
    code, _, _ = run(capsys, "train", "--resume", run_dir, "--data", corpus_dir, "--quiet")
    assert code == 0 and ckpt_io.load(run_dir).step == 4  # and resumes to the end


def test_a_full_disk_while_exporting_is_one_line(capsys, full_disk, tmp_path):
    import safetensors.torch

    full_disk(safetensors.torch, "save_file")
    t5_run = Path(__file__).resolve().parents[1] / "fixtures" / "old-layout" / "t5"
    code, _, err = run(capsys, "hf-export", t5_run, "--out", tmp_path / "hf")
    line = one_line(err)
    assert (
        code == 2
        and line.startswith("stlm hf-export: error: cannot write")
        and line.endswith("No space left on device")
    )
    assert not (tmp_path / "hf" / "model.safetensors").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A real 16 MiB filesystem (tmpfs): room for one decoder-tiny checkpoint, not two."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode(errors='replace').strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)  # lazy: a failed test may still hold a file


def test_a_really_full_disk_while_training_is_one_line_and_the_previous_checkpoint_resumes(
    capsys, tmp_path, small_disk, corpus_dir, cache_dir, one_thread
):
    # torch reports this disk's refusal as "RuntimeError: [enforce fail at inline_container.cc]".
    import json
    import shutil

    from stlm import checkpoint as ckpt_io

    from ..conftest import tiny_config

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(tiny_config(corpus_dir, cache_dir, steps=4, save_every=2, eval_tokens=512).to_dict()))
    run_dir = small_disk / "run"
    code, _, err = run(capsys, "train", "--config", recipe, "--out", run_dir, "--quiet")
    line = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err, err
    assert line.startswith("stlm train: error: cannot write") and line.endswith("No space left on device"), line
    assert ckpt_io.load(run_dir).step == 2  # the previous checkpoint loads
    moved = shutil.copytree(run_dir, tmp_path / "run")  # on a disk with room, it resumes to the end
    code, _, _ = run(capsys, "train", "--resume", moved, "--data", corpus_dir, "--quiet")
    assert code == 0 and ckpt_io.load(moved).step == 4
