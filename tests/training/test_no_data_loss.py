"""No command destroys a checkpoint: --resume of a checkpoint folder, --out inside what a command
reads, impossible steps in state.json, pruning, leftovers of killed writers, one writer per run."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stlm import checkpoint as ckpt_io
from stlm import registry
from stlm.cli.main import main as cli_main
from stlm.errors import UserError
from stlm.training.loop import resume, train

from ..conftest import tiny_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _run(capsys, *argv):
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _fingerprint(root: Path) -> dict[str, str]:
    """Every file under root (the lock file aside) -> its SHA-256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ckpt_io.LOCK_FILE
    }


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def run6(tmp_path_factory, corpus_dir, cache_dir):
    """A finished decoder-tiny run with checkpoints at steps 3 and 6 (copied per test)."""
    run = tmp_path_factory.mktemp("nodataloss") / "run"
    train(tiny_config(corpus_dir, cache_dir, steps=6, save_every=3, keep_checkpoints=5), run, progress=False)
    return run


@pytest.fixture
def run(run6, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run6, copy)
    return copy


def _ckpt(run, step):
    return run / "checkpoints" / ckpt_io.checkpoint_name(step)


def test_resume_of_the_newest_checkpoint_folder_resumes_into_its_run(run, capsys, corpus_dir, one_thread):
    before = _fingerprint(_ckpt(run, 6))
    code, _, err = _run(capsys, "train", "--resume", _ckpt(run, 6), "--data", corpus_dir, "--stop-at", 1, "--quiet")
    assert code == 0, err
    assert _fingerprint(_ckpt(run, 6)) == before  # nothing written inside the checkpoint
    assert not (_ckpt(run, 6) / "checkpoints").exists() and not (_ckpt(run, 6) / "metrics.jsonl").exists()
    ckpt_io.verify_checkpoint(_ckpt(run, 6))
    # and it continues the run it sits in
    code, out, err = _run(
        capsys, "train", "--resume", _ckpt(run, 6), "--data", corpus_dir, "--set", "train.steps=8", "--quiet"
    )
    assert code == 0, err
    assert _ckpt(run, 8).is_dir() and "step 8" in out


def test_resume_of_an_older_checkpoint_is_refused_with_how(run, capsys):
    before = _fingerprint(run)
    code, _, err = _run(capsys, "train", "--resume", _ckpt(run, 3), "--stop-at", 1)
    line = _one_line_error(err)
    assert code == 2 and "newest" in line and f"--resume {run}" in line
    assert _fingerprint(run) == before


def test_resume_of_a_checkpoint_outside_a_run_is_refused(run, tmp_path, capsys):
    import shutil

    alone = tmp_path / "alone"
    shutil.copytree(_ckpt(run, 6), alone)
    before = _fingerprint(alone)
    code, _, err = _run(capsys, "train", "--resume", alone)
    assert code == 2 and "outside a run folder" in _one_line_error(err)
    assert _fingerprint(alone) == before


@pytest.mark.parametrize("step", [-5, 99, 4])  # negative, beyond the 6 steps, not the folder's step
def test_impossible_step_in_state_json_is_refused_before_anything_is_touched(run, capsys, step):
    state_path = _ckpt(run, 6) / "state.json"
    state = json.loads(state_path.read_text())
    state["step"] = step
    state_path.write_text(json.dumps(state))
    # the manifest recomputed, as anyone editing the folder can: the hashes alone cannot catch it
    manifest = json.loads((_ckpt(run, 6) / "manifest.json").read_text())
    manifest["state.json"] = {
        "bytes": state_path.stat().st_size,
        "sha256": hashlib.sha256(state_path.read_bytes()).hexdigest(),
    }
    (_ckpt(run, 6) / "manifest.json").write_text(json.dumps(manifest))
    before = _fingerprint(run)
    code, _, err = _run(capsys, "train", "--resume", run, "--set", "train.steps=9", "--set", "train.save_every=1")
    line = _one_line_error(err)
    assert code == 2 and "state.json" in line and str(step) in line
    assert _fingerprint(run) == before


def test_train_out_inside_a_checkpoint_is_refused(run, capsys, corpus_dir, cache_dir):
    before = _fingerprint(run)
    for out in (_ckpt(run, 6), _ckpt(run, 6) / "sub", run / "checkpoints"):
        with pytest.raises(UserError, match="holds checkpoints"):
            train(tiny_config(corpus_dir, cache_dir), out, progress=False)
    assert _fingerprint(run) == before


def test_writing_commands_refuse_an_out_inside_what_they_read(run, capsys, tmp_path):
    before = _fingerprint(run)
    ckpt = _ckpt(run, 6)
    cases = [
        ("evaluate", run, "--out", ckpt),
        ("evaluate", run, "--json", ckpt / "state.json"),
        ("evaluate", run, "--json", run / "config.json"),
        ("plot", run, "--out", run / "metrics.jsonl"),
        ("plot", run, "--out", ckpt / "loss.png"),
        ("hf-export", run, "--out", ckpt),
        ("hf-export", run, "--out", run),
        ("finetune", "--init", run, "--out", ckpt),
        ("train-tokenizer", "--data", "x", "--vocab-size", "300", "--out", ckpt / "tokenizer.json"),
    ]
    for argv in cases:
        code, _, err = _run(capsys, *argv)
        assert code == 2, (argv, err)
        _one_line_error(err)
    assert _fingerprint(run) == before


def test_hf_export_into_the_checkpoint_it_exports_is_refused(tmp_path, capsys):
    family, cfg = registry.resolve_model("t5-debug")
    record = ckpt_io.RunRecord(family, cfg, {"name": family.default_tokenizer(cfg)})
    run = tmp_path / "t5run"
    ckpt_io.save_checkpoint(run, 6, model=family.build(cfg), optimizer=None, config=record, state={}, keep=1)
    before = _fingerprint(run)
    code, _, err = _run(capsys, "hf-export", run, "--out", _ckpt(run, 6))
    assert code == 2 and "holds checkpoints" in _one_line_error(err)
    assert _fingerprint(run) == before
    ckpt_io.verify_checkpoint(_ckpt(run, 6))


def test_pruning_never_removes_a_newer_checkpoint(run):
    """Resumed from step 3 (step 6 fails verification): saving step 4 with keep 1 keeps step 6."""
    (_ckpt(run, 6) / "model.safetensors").write_bytes(
        bytes(b ^ 0xFF for b in (_ckpt(run, 6) / "model.safetensors").read_bytes())
    )  # the right size, the wrong content
    loaded = ckpt_io.load(_ckpt(run, 3))
    record = ckpt_io.read_record(_ckpt(run, 3) / "config.json")
    ckpt_io.save_checkpoint(run, 4, model=loaded.model, optimizer=None, config=record, state={}, keep=1)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step-00000004", "step-00000006"]


def test_a_corrupt_newest_checkpoint_falls_back_to_the_newest_verified_saying_so(run, capsys, corpus_dir, one_thread):
    target = _ckpt(run, 6) / "model.safetensors"
    target.write_bytes(bytes(b ^ 0xFF for b in target.read_bytes()))  # same size: only the hash can tell
    code, out, err = _run(capsys, "generate", run, "--prompt", "a", "--max-new-bytes", "2", "--greedy")
    assert code == 0 and "using" in err and "step-00000003" in err and "step-00000006" in err
    result = resume(
        run, overrides={"train.steps": 6, "data.source": str(corpus_dir)}, progress=False
    )  # resumes from step 3, saying so
    assert result.step == 6
    assert "step-00000003" in capsys.readouterr().err
    ckpt_io.verify_checkpoint(_ckpt(run, 6))  # the corrupt one replaced by a good step 6


# --- leftovers of killed writers ------------------------------------------------------------------


def test_leftovers_of_killed_writers_are_removed_by_the_next_writer_saying_so(run, capsys, corpus_dir, one_thread):
    import shutil

    dead = _dead_pid()
    root = run / "checkpoints"
    shutil.copytree(_ckpt(run, 6), root / f".step-00000007.tmp-{dead}")
    shutil.copytree(_ckpt(run, 6), root / f".step-00000006.old-{dead}")
    half = root / "step-00000001"
    shutil.copytree(_ckpt(run, 3), half)
    (half / "manifest.json").unlink()  # a kill while pruning: part of it gone
    result = resume(run, overrides={"train.steps": 7, "data.source": str(corpus_dir)}, progress=False)
    assert result.step == 7
    err = capsys.readouterr().err
    assert err.count("removed leftovers") == 1
    for name in (f".step-00000007.tmp-{dead}", f".step-00000006.old-{dead}", "step-00000001"):
        assert name in err and not (root / name).exists()


def test_a_live_writers_temp_folder_is_left_alone(run):
    (run / "checkpoints" / f".step-00000007.tmp-{os.getppid()}").mkdir()
    assert ckpt_io.remove_leftovers(run) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- one writer per run folder ----------------------------------------------------------------------


def test_a_second_writer_gets_one_line_naming_the_holder(run, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(run)], env={**ENV, "PYTHONPATH": os.getcwd()}, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        before = _fingerprint(run)
        writers = [
            ("train", "--resume", run, "--set", "train.steps=8"),
            ("train", "--model", "decoder-tiny", "--out", run),
            ("finetune", "--resume", run),
            ("demo", "--out", run, "--steps", 1),
            ("hf-import", run / "no-such-hf-dir", "--out", run),
        ]
        for argv in writers:
            code, _, err = _run(capsys, *argv)
            line = _one_line_error(err)
            assert code == 2 and f"pid {holder.pid}" in line, (argv, line)
        assert _fingerprint(run) == before
    finally:
        holder.kill()
        holder.wait()


_HOLD = """
import sys, time
from stlm import checkpoint
with checkpoint.run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_two_concurrent_trainers_exactly_one_runs_and_the_run_resumes(tmp_path, corpus_dir, cache_dir):
    cfg = tiny_config(corpus_dir, cache_dir, steps=6, save_every=2, log_every=1)
    cfg.runtime.threads = 1
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "stlm", "train", "--config", str(tmp_path / "cfg.json"), "--out", str(out)]
    env = {**ENV, "PYTHONPATH": os.getcwd()}
    procs = [
        subprocess.Popen(argv + ["--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in "ab"
    ]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    line = _one_line_error(loser)
    assert "in use" in line or "already holds a run" in line
    ckpt_io.verify_checkpoint(_ckpt(out, 6))
    steps = [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len([s for s in steps if s == 6]) == 2  # the loss row and the val row, once
    result = resume(out, overrides={"train.steps": 7, "data.source": str(corpus_dir)}, progress=False)
    assert result.step == 7


def test_a_lock_left_by_a_sigkilled_trainer_does_not_block_the_next_resume(tmp_path, corpus_dir, cache_dir):
    cfg = tiny_config(corpus_dir, cache_dir, steps=400, save_every=1, log_every=1, keep_checkpoints=2)
    cfg.runtime.threads = 1
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "stlm", "train", "--config", str(tmp_path / "cfg.json"), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(argv, env={**ENV, "PYTHONPATH": os.getcwd()}, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while ckpt_io.latest_checkpoint(out) is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / ckpt_io.LOCK_FILE).read_text().strip() == str(proc.pid)  # the lock file stays behind
    done = ckpt_io.checkpoint_step(ckpt_io.latest_checkpoint(out))
    result = resume(out, overrides={"data.source": str(corpus_dir)}, stop_at=done + 1, progress=False)
    assert result.step == done + 1


def test_a_torn_metrics_line_does_not_block_resume(run, capsys, corpus_dir, one_thread):
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"step": 6, "val_b')  # a kill in the middle of a write
    result = resume(run, overrides={"train.steps": 7, "data.source": str(corpus_dir)}, progress=False)
    assert result.step == 7
    assert "unreadable" in capsys.readouterr().err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 7


def test_an_out_under_an_ordinary_folder_named_checkpoints_is_fine(tmp_path):
    ckpt_io.check_output(tmp_path / "checkpoints" / "my-run")
    (tmp_path / "checkpoints").mkdir()
    ckpt_io.check_output(tmp_path / "checkpoints" / "my-run")


def test_evaluate_of_a_checkpoint_standing_alone_writes_beside_it(run, tmp_path, capsys, one_thread):
    import shutil

    alone = tmp_path / "alone"
    shutil.copytree(_ckpt(run, 6), alone)
    before = _fingerprint(alone)
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 20, encoding="utf-8")
    code, _, err = _run(capsys, "evaluate", alone, "--file", text, "--quiet")
    assert code == 0, err
    assert _fingerprint(alone) == before and not (alone / "evals").exists()
    assert list((tmp_path / "alone-evals").glob("*.json"))


def test_a_run_whose_every_checkpoint_is_corrupt_is_refused_not_restarted(run, capsys):
    for step in (3, 6):
        target = _ckpt(run, step) / "model.safetensors"
        target.write_bytes(bytes(b ^ 0xFF for b in target.read_bytes()))
    before = _fingerprint(run)
    code, _, err = _run(capsys, "train", "--resume", run)
    assert code == 2 and "corrupt" in _one_line_error(err)
    assert _fingerprint(run) == before
