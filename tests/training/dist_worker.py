"""Runs several training jobs in one torchrun process group (tests/training/test_distributed.py).

    torchrun --nproc-per-node 2 tests/training/dist_worker.py PLAN.json

PLAN is a list of jobs {"cfg": RunConfig dict, "out": dir, "stop_at": int|null,
"sigterm_rank": int|null, "sigterm_at_batch": int, "resume": bool, "data": the corpus to resume on} or
{"cli": [args of `stlm`]}. Each rank appends what train() returned to
OUT/rank-R.json (CLI jobs: the exit code).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch.distributed as dist

from stlm.cli.main import main as cli_main
from stlm.config import RunConfig
from stlm.data import WindowLoader
from stlm.training.loop import resume, train


def main(plan_path: str) -> None:
    dist.init_process_group("gloo")  # shared by every job: the loop joins it instead of creating one
    rank = dist.get_rank()
    for job in json.loads(Path(plan_path).read_text()):
        if "cli" in job:  # the command line's own path, inside this process group
            code = cli_main(job["cli"])
            with open(Path(job["cli_log"]) / f"rank-{rank}.json", "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"exit": code}) + "\n")
            continue
        out = Path(job["out"])
        original = WindowLoader.next_batch
        if job.get("sigterm_rank") == rank:  # this rank alone is asked to stop, inside a step
            calls = {"n": 0}

            def next_batch(self, _at=job["sigterm_at_batch"]):
                calls["n"] += 1
                if calls["n"] == _at:
                    signal.raise_signal(signal.SIGTERM)
                return original(self)

            WindowLoader.next_batch = next_batch
        try:
            if job.get("resume"):
                result = resume(out, overrides={"data.source": job["data"]}, progress=False)
            else:
                result = train(RunConfig.from_dict(job["cfg"]), out, stop_at=job.get("stop_at"), progress=False)
        finally:
            WindowLoader.next_batch = original
        record = {"step": result.step, "interrupted": result.interrupted, "val": result.val}
        with open(out / f"rank-{rank}.json", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main(sys.argv[1])
