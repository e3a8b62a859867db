"""Fine-tuning evaluation's greedy generation: batched against one example at a time.

Generates the predictions for the first N examples of a built-in task's test
split (default: 64 of docstring-summary) with randomly initialised presets, as
`stlm finetune` scores them (its prompt format, its max_new_tokens rule): once
through `generate_predictions` in batches, once example by example with
`TextToText.generate` (the way evaluation generated before). The two
alternate round by round so machine noise hits both alike; printed are the
median seconds per round, the ratio, and whether the predictions are equal.

    .venv/bin/python bench/batched_generation.py
    .venv/bin/python bench/batched_generation.py --models t5-debug --examples 128 --batch-size 32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.timing import interleaved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="docstring-summary")
    parser.add_argument("--models", default="t5-debug,decoder-tiny", help="comma-separated presets")
    parser.add_argument("--examples", type=int, default=64, help="the first N test examples (0: all)")
    parser.add_argument("--batch-size", type=int, default=16, help="stlm finetune uses train.batch_size (16)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from stlm import registry
    from stlm.finetune.config import TaskConfig
    from stlm.finetune.evaluate import generate_predictions
    from stlm.finetune.format import TextToText
    from stlm.finetune.pydocs_tasks import build_task

    splits = build_task(args.task)
    examples = splits["test"][: args.examples or None]
    task = TaskConfig(name=args.task)
    print(f"{args.task}: {len(examples)} test examples, batch size {args.batch_size}, {args.threads} thread(s)")
    for name in args.models.split(","):
        torch.manual_seed(0)
        family, cfg = registry.resolve_model(name)
        model = family.build(cfg).eval()
        tokenizer = family.resolve_tokenizer("auto", cfg)
        max_len = family.max_len(cfg)
        fmt = TextToText(family, tokenizer, task.separator, task.max_input_bytes, task.max_target_bytes, max_len)
        # stlm finetune's rule: the longest training target + 8, at most max_target_bytes + 8.
        max_new = min(task.max_target_bytes + 8, max(len(tokenizer.encode(ex.target)) for ex in splits["train"]) + 8)
        out: dict[str, list[str]] = {}

        def batched() -> None:
            out["batched"] = generate_predictions(
                model, fmt, examples, max_new_tokens=max_new, batch_size=args.batch_size
            )

        def one_at_a_time() -> None:
            out["single"] = [fmt.generate(model, ex.input, max_new) for ex in examples]

        t_batched, t_single = interleaved(
            batched, one_at_a_time, warmup=args.warmup, repeats=args.repeats, device=torch.device("cpu")
        )
        print(
            f"  {name:14s} max_new_tokens {max_new}: one at a time {t_single:7.2f} s, batched {t_batched:6.2f} s, "
            f"speedup x{t_single / t_batched:.1f}; predictions identical: {out['batched'] == out['single']}"
        )


if __name__ == "__main__":
    main()
