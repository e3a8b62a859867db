"""Does an encoder-decoder trained from scratch learn a two-class task, or predict one label?

A synthetic sentiment set with the shape of the real one that showed the
problem (3,200 training examples, two labels written as words): each input is
20-30 neutral words with 2-4 cue words of its label's polarity and 0-1 of the
other's, shuffled, so a bag of words solves it exactly and any model that
reads its input can. Every model is fine-tuned through `stlm.finetune`'s own
loop (same formats, loss, schedule, evaluation) and scored on 300 held-out
examples: accuracy of the generated label and of the label log-probability,
how many distinct labels it generated, and the bag-of-words baseline.

    python bench/t5_classification.py                       # t5-debug and decoder-tiny, 400 steps
    python bench/t5_classification.py --models t5-debug --steps 1500 --lr 3e-3
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from stlm.config import OptimConfig, RuntimeConfig
from stlm.finetune.config import FinetuneConfig, FinetuneTrainConfig, TaskConfig
from stlm.finetune.loop import finetune

POSITIVE = [
    "great",
    "wonderful",
    "superb",
    "lovely",
    "brilliant",
    "delightful",
    "excellent",
    "moving",
    "charming",
    "gripping",
]
NEGATIVE = ["awful", "boring", "dreadful", "dull", "terrible", "tedious", "poor", "clumsy", "bland", "tiresome"]
NEUTRAL = [
    "the",
    "a",
    "film",
    "story",
    "actor",
    "scene",
    "camera",
    "music",
    "plot",
    "script",
    "director",
    "cast",
    "it",
    "was",
    "and",
    "of",
    "in",
    "with",
    "this",
    "that",
    "movie",
    "ending",
    "start",
    "middle",
    "character",
    "time",
    "year",
    "studio",
    "sound",
    "light",
    "shot",
    "cut",
    "some",
    "very",
    "quite",
    "rather",
    "long",
    "short",
    "old",
    "new",
    "first",
    "last",
    "another",
    "one",
    "two",
    "three",
    "its",
    "their",
    "we",
    "they",
    "he",
    "she",
    "saw",
    "watched",
    "felt",
]


def make_examples(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        same, other = (POSITIVE, NEGATIVE) if label == "positive" else (NEGATIVE, POSITIVE)
        words = rng.choices(NEUTRAL, k=rng.randint(20, 30))
        words += rng.choices(same, k=rng.randint(2, 4)) + rng.choices(other, k=rng.randint(0, 1))
        rng.shuffle(words)
        rows.append({"input": " ".join(words), "target": label})
    return rows


def write(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(model: str, steps: int, lr: float, warmup: int, data: dict[str, Path], out: Path) -> dict:
    cfg = FinetuneConfig(
        init=model,
        task=TaskConfig(
            train_file=str(data["train"]), val_file=str(data["val"]), test_file=str(data["test"]), kind="classification"
        ),
        optim=OptimConfig(lr=lr, warmup_steps=warmup, weight_decay=0.0),
        train=FinetuneTrainConfig(
            steps=steps, batch_size=16, eval_every=steps, eval_examples=50, patience=0, score_initial=False
        ),
        runtime=RuntimeConfig(device="cpu", precision="fp32", threads=2),
    )
    t0 = time.perf_counter()
    result = finetune(cfg, out, progress=False).results
    generated = Counter(row["prediction"] for row in result["predictions"])
    return {
        "model": model,
        "steps": steps,
        "lr": lr,
        "best_step": result["best_step"],
        "accuracy": round(result["finetuned"]["accuracy"], 3),
        "accuracy_logprob": round(result["finetuned"]["accuracy_logprob"], 3),
        "generated_labels": dict(generated.most_common(3)),
        "bag_of_words": round(result["baselines"]["bag_of_words"]["accuracy"], 3),
        "majority": round(result["baselines"]["majority"]["accuracy"], 3),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="t5-debug,decoder-tiny")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = {
            "train": write(root / "train.jsonl", make_examples(3200, 0)),
            "val": write(root / "val.jsonl", make_examples(200, 1)),
            "test": write(root / "test.jsonl", make_examples(300, 2)),
        }
        for model in args.models.split(","):
            print(json.dumps(run(model, args.steps, args.lr, args.warmup, data, root / model)), flush=True)


if __name__ == "__main__":
    main()
