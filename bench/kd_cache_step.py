"""One distillation training step (forward + backward, batch 8 x 256 bytes) four ways, interleaved so load
from elsewhere on a shared machine slows all alike (bench/timing.py): no teacher, the live teacher, the
teacher cache on a first epoch (teacher + write) and on a later one (read), for each stored form; and the
cache's bytes per row.

    python bench/kd_cache_step.py --teacher runs/mtpkd/teacher [--json bench/results/kd_cache_step.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import interleaved_many

from stlm import registry
from stlm.config import DistillConfig
from stlm.objectives.next_token import NextTokenObjective
from stlm.training.distill import distilled, load_teacher

FORMS = {"fp16 all ids": (0, "fp16"), "fp16 top-16": (16, "fp16"), "fp32 all ids": (0, "fp32")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    family, model_cfg = registry.resolve_model("decoder-tiny")
    student = family.build(model_cfg)
    tokenizer = family.resolve_tokenizer("auto", model_cfg)
    objective = NextTokenObjective(256, tokenizer.byte_lengths())
    rng = torch.Generator().manual_seed(0)

    def batch() -> torch.Tensor:
        return torch.randint(0, 256, (8, 257), generator=rng)

    fixed = batch()

    def step(obj, windows) -> None:
        student.zero_grad(set_to_none=True)
        obj.loss(student, windows).backward()

    fns = {"no teacher": lambda: step(objective, fixed)}
    live_cfg = DistillConfig(teacher=args.teacher)
    teacher, record = load_teacher(live_cfg, tokenizer, torch.device("cpu"))
    live = distilled(objective, teacher, live_cfg, teacher_record=record, tokenizer=tokenizer)
    fns["live teacher"] = lambda: step(live, fixed)
    sizes = {}
    with tempfile.TemporaryDirectory() as root:
        for name, (topk, dtype) in FORMS.items():
            cfg = DistillConfig(teacher=args.teacher, cache=root, cache_topk=topk, cache_dtype=dtype)
            cached = distilled(objective, teacher, cfg, teacher_record=record, tokenizer=tokenizer)
            cached.loss(student, fixed)  # stored: every later call reads
            fns[f"cache {name}, first epoch (teacher + write)"] = lambda c=cached: step(c, batch())
            fns[f"cache {name}, later epoch (read)"] = lambda c=cached: step(c, fixed)
            files, size = cached.cache.size_bytes()
            sizes[name] = size / files
        times = interleaved_many(fns, warmup=2, repeats=args.repeats, device=torch.device("cpu"))
        per_row = {name: round(b) for name, b in sizes.items()}
    result = {
        "teacher": args.teacher,
        "threads": args.threads,
        "batch": "8 x 256 bytes",
        "seconds_per_step": {k: round(v, 4) for k, v in times.items()},
        "bytes_per_row": per_row,
        "bytes_per_position": {k: round(v / 256, 1) for k, v in per_row.items()},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
