"""Two CPU processes (gloo) under torchrun match one process with the same global batch.

One launch covers everything (starting processes dominates the cost); its
process group runs: DDP to the end; FSDP to the end; DDP where rank 1 alone
receives SIGTERM mid-step, then resumed; FSDP stopped at step 3, then resumed
by the command line's `stlm train --resume`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stlm import checkpoint as ckpt_io
from stlm.config import RunConfig
from stlm.training.loop import train

from ..conftest import tiny_config

pytestmark = pytest.mark.distributed

STEPS = 6
WORKER = Path(__file__).with_name("dist_worker.py")


def _config(corpus_dir, cache_dir, parallel="auto"):
    cfg = tiny_config(
        corpus_dir, cache_dir, steps=STEPS, batch_size=4, grad_accum=2, save_every=2, eval_every=3, log_every=1
    )
    cfg.runtime.parallel = parallel
    return cfg


def _torchrun(*args: str, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus_dir, cache_dir):
    root = tmp_path_factory.mktemp("dist")
    single = train(_config(corpus_dir, cache_dir), root / "single", progress=False)  # also the teacher below
    ddp, fsdp = _config(corpus_dir, cache_dir, "ddp").to_dict(), _config(corpus_dir, cache_dir, "fsdp").to_dict()
    plan = [
        {"cfg": ddp, "out": str(root / "ddp")},
        {"cfg": fsdp, "out": str(root / "fsdp")},
        # 2 micro-batches a step: batch 7 is inside step 4, so both ranks must stop after step 4.
        {"cfg": ddp, "out": str(root / "sigterm"), "sigterm_rank": 1, "sigterm_at_batch": 7},
        {"out": str(root / "sigterm"), "resume": True, "data": str(corpus_dir)},
        {"cfg": fsdp, "out": str(root / "fsdp-stop"), "stop_at": 3},
        {
            "cli": ["train", "--resume", str(root / "fsdp-stop"), "--data", str(corpus_dir), "--quiet"],
            "cli_log": str(root),
        },
        {"cfg": _distilled(ddp, root, "kd-cache-ddp"), "out": str(root / "kd-ddp")},
    ]
    (root / "plan.json").write_text(json.dumps(plan))
    _torchrun(str(WORKER), str(root / "plan.json"), cwd=root)
    assert [json.loads((root / f"rank-{r}.json").read_text()) for r in (0, 1)] == [{"exit": 0}] * 2
    kd = _distilled(_config(corpus_dir, cache_dir).to_dict(), root, "kd-cache-single")
    train(RunConfig.from_dict(kd), root / "kd-single", progress=False)
    return root, single


def _distilled(cfg: dict, root: Path, cache: str) -> dict:
    """`cfg` distilled from the single-process run, the teacher's outputs cached (fp32: exact) in root/cache."""
    distill = {"teacher": str(root / "single"), "cache": str(root / cache), "cache_dtype": "fp32"}
    return {**cfg, "distill": {**cfg["distill"], **distill}}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(ckpt_io.latest_checkpoint(run) / "model.safetensors")


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _ranks(run: Path) -> list[list[dict]]:
    return [[json.loads(l) for l in (run / f"rank-{r}.json").read_text().splitlines()] for r in (0, 1)]


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(runs, mode):
    root, single = runs
    assert ckpt_io.latest_checkpoint(root / mode).name == ckpt_io.checkpoint_name(STEPS)
    one, two = _losses(root / "single"), _losses(root / mode)
    assert len(one) == len(two) == STEPS
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-4, atol=1e-5)
    a, b = _weights(root / "single"), _weights(root / mode)
    assert a.keys() == b.keys()  # one consolidated file, same names as a single-process run
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)
    ranks = _ranks(root / mode)
    assert ranks[0] == ranks[1]  # validation is pooled: every rank reports the same numbers
    assert ranks[0][0]["val"]["val_bpb"] == pytest.approx(single.val["val_bpb"], rel=1e-4)
    assert ranks[0][0]["val"]["val_bytes"] == single.val["val_bytes"]
    model = ckpt_io.load(root / mode).model  # loads in one process for evaluate/generate
    assert sum(p.numel() for p in model.parameters()) > 0


def test_sigterm_on_one_rank_stops_all_at_the_same_step_and_resumes_exactly(runs):
    root, _ = runs
    first, then = zip(*_ranks(root / "sigterm"))
    assert first[0] == first[1] and first[0]["interrupted"] and first[0]["step"] == 4
    assert then[0]["step"] == then[1]["step"] == STEPS and not then[0]["interrupted"]
    a, b = _weights(root / "ddp"), _weights(root / "sigterm")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _losses(root / "sigterm") == _losses(root / "ddp")


def test_stopped_fsdp_run_resumed_from_the_cli_equals_an_uninterrupted_one(runs):
    root, _ = runs
    assert _ranks(root / "fsdp-stop")[0][0]["step"] == 3
    a, b = _weights(root / "fsdp"), _weights(root / "fsdp-stop")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _losses(root / "fsdp-stop") == _losses(root / "fsdp")


def test_distillation_with_a_teacher_cache_under_torchrun_matches_one_process(runs):
    """Both ranks load the teacher and share one cache folder (files named by content, not by rank)."""
    root, _ = runs
    one, two = _losses(root / "kd-single"), _losses(root / "kd-ddp")
    assert len(one) == len(two) == STEPS
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-4, atol=1e-5)
    assert one != _losses(root / "single")  # the teacher's term is in the loss
    a, b = _weights(root / "kd-single"), _weights(root / "kd-ddp")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)
    ddp_files, single_files = _files(root / "kd-cache-ddp"), _files(root / "kd-cache-single")
    assert ddp_files and ddp_files == single_files


def _files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
