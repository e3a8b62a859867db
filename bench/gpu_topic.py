"""docstring-topic from a larger pooled model pretrained far longer: the lever a 2-core CPU cannot try.

docs/finetune.md leaves one lever untested for beating bag of words on docstring-topic: a pooled
model larger than 10M parameters, pretrained on far more text than CPU-hours give. This bench
does it in one call on one GPU machine that cannot reach the network:

  pack  (here)          writes .carry/: the built offline-mix corpus (xz, about 25 MB), this
                        machine's docstring-topic split (.carry/topic/{train,val,test}.jsonl) and the
                        stdlib docstrings outside it (unlabelled.jsonl). They are carried because the
                        task's examples depend on the Python version, and the GPU machine's Python is
                        not this one.
  run   (on the GPU)    unpacks the corpus into a cache folder of its own, measures seconds per step
                        with a short probe, pretrains --model for --minutes on offline-mix's training
                        split, then fine-tunes every --lrs x --seeds pair at once (one process each)
                        and prints the table: each run's best validation and its test accuracy, the
                        run validation picks, the seeds' averaged label posteriors at the learning
                        rate validation prefers, and bag of words on the same split. Then the best CPU
                        recipe at this size (docs/finetune.md, co-training): the run validation picks
                        and naive Bayes (weight --bow-weight) label the unlabelled docstrings, and a
                        student fine-tunes --student-steps on the gold rows and those soft labels.
                        --report DIR gets the table (summary.json, summary.txt) and the runs'
                        results.json files (student.json for the student).

    .venv/bin/python bench/gpu_topic.py pack
    # on the GPU machine (the device call carries .carry; its Python has torch and the rest):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .carry/wheels/*.whl
    PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 bench/gpu_topic.py run --minutes 3 --report "$OUT"

`run` needs torch with CUDA, numpy, safetensors, tqdm, tokenizers, sentencepiece, matplotlib and
platformdirs (`pack` fetches platformdirs' wheel into .carry/wheels). Everything it writes goes under
--work; a rerun keeps a finished pretraining and fine-tunes again.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: bench/ is a package of the repository

from bench.run_records import records, seconds_per_step  # noqa: E402

CARRY = ROOT / ".carry"
SPLITS = ("train", "val", "test")
UNLABELLED = "unlabelled.jsonl"  # the stdlib docstrings outside the task's splits
# pooled-50m with hash-long's patches: entropy boundaries fitted to ~8 bytes, at most 16
MODEL = "pooled-50m"
MODEL_SETS = ("model.boundary=entropy", "model.entropy_patch_len=8.0", "model.max_patch_len=16")


def stlm(*args: str, log: Path | None = None) -> subprocess.Popen:
    """Start `python -m stlm ARGS` from the repository root (its output to `log` when given)."""
    print("$ stlm " + " ".join(args), flush=True)
    out = open(log, "w") if log is not None else None  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "stlm", *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def wait(proc: subprocess.Popen, what: str, log: Path | None = None) -> None:
    if proc.wait() != 0:
        tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
        raise SystemExit(f"{what} failed (exit {proc.returncode})\n{tail}")


def finished_steps(run: Path) -> int | None:
    """The step count of a pretraining run that reached its last step (its checkpoint written), else None."""
    config = run / "config.json"
    if not config.is_file():
        return None
    steps = int(json.loads(config.read_text())["run"]["train"]["steps"])
    return steps if (run / "checkpoints" / f"step-{steps:08d}").is_dir() else None


def pack(args: argparse.Namespace) -> None:
    from stlm.data.offline_mix import build_offline_mix, corpus_path
    from stlm.finetune.examples import write_jsonl
    from stlm.finetune.pydocs_tasks import build_task, unlabelled_docstrings

    corpus = corpus_path(args.cache_dir)
    if not corpus.is_file():
        build_offline_mix(args.cache_dir)
    CARRY.mkdir(exist_ok=True)
    target = CARRY / f"{corpus.name}.xz"  # named by the corpus's table hash: a rebuilt table is packed anew
    for old in CARRY.glob("*.xz"):
        if old != target:
            old.unlink()
    if not target.is_file():
        print(f"compressing {corpus} -> {target}", flush=True)
        part = target.with_suffix(".part")
        with open(corpus, "rb") as src, lzma.open(part, "wb", preset=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        part.replace(target)
    (CARRY / "corpus-name").write_text(corpus.name + "\n")
    topic = CARRY / "topic"
    topic.mkdir(exist_ok=True)
    for split, examples in build_task("docstring-topic").items():
        write_jsonl(topic / f"{split}.jsonl", examples)
    with open(topic / UNLABELLED, "w", encoding="utf-8") as fh:  # the student's transfer text
        fh.writelines(json.dumps({"input": text}) + "\n" for text in unlabelled_docstrings("docstring-topic"))
    # The GPU machine's Python lacks platformdirs (pure Python): its wheel travels too.
    from importlib.metadata import version

    wheels = CARRY / "wheels"
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(wheels)]
    if args.wheels:
        subprocess.run([*pip, f"platformdirs=={version('platformdirs')}"], check=True)
    size = sum(p.stat().st_size for p in CARRY.rglob("*") if p.is_file())
    print(f"{CARRY}: {size / 2**20:.1f} MiB (carry it: the device call's carry names .carry)")


def unpack(work: Path) -> Path:
    """The cache folder holding offline-mix under the name stlm looks for, unpacked from .carry."""
    cache = work / "cache"
    name = (CARRY / "corpus-name").read_text().strip()
    corpus = cache / "corpora" / name
    if not corpus.is_file():
        corpus.parent.mkdir(parents=True, exist_ok=True)
        part = corpus.with_suffix(".part")
        with lzma.open(CARRY / f"{name}.xz", "rb") as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        part.replace(corpus)
    return cache


def pretrain_args(args: argparse.Namespace, cache: Path, steps: int, out: Path) -> list[str]:
    sets = [x for s in args.set for x in ("--set", s)]
    return [
        "train", "--model", args.model, *sets, "--data", "offline-mix", "--cache-dir", str(cache), "--workers", "0",
        "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--steps", str(steps),
        "--lr", str(args.pretrain_lr), "--device", args.device, "--precision", args.precision,
        "--log-every", "5", "--save-every", "0", "--eval-every", "0", "--quiet", "--out", str(out),
    ]  # fmt: skip


def finetune_args(
    args: argparse.Namespace, model: Path, lr: float, seed: int, out: Path, train: Path | None = None,
    steps: int | None = None, eval_every: int | None = None,
) -> list[str]:  # fmt: skip
    topic = CARRY / "topic"
    return [
        "finetune", "--kind", "classification", "--model", str(model), "--train", str(train or topic / "train.jsonl"),
        "--val", str(topic / "val.jsonl"), "--test", str(topic / "test.jsonl"), "--steps", str(steps or args.ft_steps),
        "--lr", str(lr), "--seed", str(seed), "--eval-every", str(eval_every or args.ft_eval_every),
        "--eval-examples", "0", "--patience", "0", "--no-score-initial", "--device", args.device,
        "--precision", args.precision, "--threads", str(args.ft_threads), "--quiet", "--out", str(out),
    ]  # fmt: skip


def teacher_args(args: argparse.Namespace, run_dir: Path, out: Path) -> list[str]:
    """The co-training teacher's labels on the unlabelled docstrings: one fine-tune and naive Bayes."""
    topic = CARRY / "topic"
    return [
        "classify", "--model", str(run_dir), "--bag-of-words", str(topic / "train.jsonl"),
        "--bag-of-words-val", str(topic / "val.jsonl"), "--bag-of-words-weight", str(args.bow_weight),
        "--input", str(topic / UNLABELLED), "--out", str(out), "--device", args.device, "--precision", "fp32",
        "--quiet",
    ]  # fmt: skip


def student(args: argparse.Namespace, pre: Path, teacher: Path, lr: float, work: Path) -> dict:
    """docs/finetune.md's best CPU recipe (co-training): `teacher` and naive Bayes label the unlabelled
    docstrings, and a fine-tune of `pre` learns the gold rows and those soft labels. Returns its results.json."""
    soft, mixed, out = work / "soft.jsonl", work / "train+soft.jsonl", work / "student"
    wait(stlm(*teacher_args(args, teacher, soft)), "the teacher's labels")
    mixed.write_bytes((CARRY / "topic" / "train.jsonl").read_bytes() + soft.read_bytes())
    shutil.rmtree(out, ignore_errors=True)
    log = work / "student.log"
    steps, every = args.student_steps, args.student_eval_every
    wait(stlm(*finetune_args(args, pre, lr, 0, out, mixed, steps, every), log=log), "the student", log)
    return json.loads((out / "results.json").read_text())


def seed_average(predictions: list[list[dict]]) -> float:
    """Test accuracy of several runs' averaged label posteriors (results.json "predictions", same split).

    Each row's "label_scores" are normalised over the labels first, so runs whose scores differ
    by a constant weigh the same; the answer is the label with the highest mean log-posterior.
    """
    if len({len(p) for p in predictions}) != 1:
        raise ValueError("the runs scored different numbers of examples")
    right = 0
    for rows in zip(*predictions):
        total: dict[str, float] = {}
        for r in rows:
            scores = r["label_scores"]
            z = math.log(math.fsum(math.exp(v) for v in scores.values()))
            for label, v in scores.items():
                total[label] = total.get(label, 0.0) + v - z
        right += max(total, key=total.__getitem__) == rows[0]["target"]
    return right / len(predictions[0])


def run(args: argparse.Namespace) -> None:
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cache = unpack(work)
    print(f"corpus unpacked in {time.perf_counter() - start:.0f} s", flush=True)

    pre = work / "pretrain"
    if finished_steps(pre) is None:  # a finished pretraining is kept: a rerun only fine-tunes again
        probe = work / "probe"
        shutil.rmtree(probe, ignore_errors=True)
        wait(stlm(*pretrain_args(args, cache, args.probe_steps, probe)), "the probe")
        sps = seconds_per_step(probe)
        steps = max(args.probe_steps, int(args.minutes * 60 / sps))
        print(f"probe: {sps:.3f} s/step -> {steps} steps in {args.minutes:g} min", flush=True)
        shutil.rmtree(pre, ignore_errors=True)
        wait(stlm(*pretrain_args(args, cache, steps, pre)), "pretraining")
    steps = finished_steps(pre) or 0
    if args.report is not None:  # now, so a call cut off while fine-tuning still brings the pretraining back
        args.report.mkdir(parents=True, exist_ok=True)
        shutil.copy(pre / "metrics.jsonl", args.report / "pretrain-metrics.jsonl")
    sps = seconds_per_step(pre)
    print(f"pretrained: {steps} steps, {sps:.3f} s/step", flush=True)
    pre_records = records(pre)

    runs: dict[str, tuple[float, int, Path]] = {}
    procs = []
    for lr in args.lrs:
        for seed in args.seeds:
            name = f"ft-lr{lr:g}-seed{seed}"
            out, log = work / name, work / f"{name}.log"
            shutil.rmtree(out, ignore_errors=True)
            runs[name] = (lr, seed, out)
            procs.append((stlm(*finetune_args(args, pre, lr, seed, out), log=log), name, log))
    for proc, name, log in procs:
        wait(proc, name, log)

    rows, predictions = [], {}
    for name, (lr, seed, out) in runs.items():
        res = json.loads((out / "results.json").read_text())
        predictions[name] = res["predictions"]
        rows.append(
            {
                "run": name,
                "lr": lr,
                "seed": seed,
                "best_step": res["best_step"],
                "val_accuracy": res["best_val"],
                "test_accuracy": res["finetuned"]["accuracy"],
                "test_accuracy_logprob": res["finetuned"]["accuracy_logprob"],
                "bag_of_words": res["baselines"]["bag_of_words"]["accuracy"],
            }
        )
    picked = max(rows, key=lambda r: r["val_accuracy"])  # the first of equals: --lrs and --seeds order
    # The seeds of the learning rate whose seeds' mean validation accuracy is highest, averaged.
    by_lr = {lr: [r for r in rows if r["lr"] == lr] for lr in args.lrs}
    avg_lr = max(args.lrs, key=lambda lr: sum(r["val_accuracy"] for r in by_lr[lr]) / len(by_lr[lr]))
    averaged = seed_average([predictions[r["run"]] for r in by_lr[avg_lr]])
    last_eval = [r for r in pre_records if any(k.startswith("val") for k in r)]
    summary = {
        "model": args.model,
        "set": list(args.set),
        "pretrain": {
            "steps": steps,
            "seconds_per_step": sps,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "lr": args.pretrain_lr,
            "last_validation": last_eval[-1] if last_eval else None,
        },
        "runs": rows,
        "picked_by_validation": picked["run"],
        "seed_average": {"lr": avg_lr, "seeds": list(args.seeds), "test_accuracy_logprob": averaged},
        "seconds": round(time.perf_counter() - start),
    }
    table = [f"{'run':<24} {'best step':>9} {'val':>6} {'test':>6} {'test lp':>7}"]
    table += [
        f"{r['run']:<24} {r['best_step']:>9} {r['val_accuracy']:>6.3f} {r['test_accuracy']:>6.3f} "
        f"{r['test_accuracy_logprob']:>7.3f}"
        for r in rows
    ]
    table.append(f"bag of words (same split): test {rows[0]['bag_of_words']:.3f}")
    table.append(f"picked by validation: {picked['run']}, test {picked['test_accuracy']:.3f}")
    table.append(f"seeds {list(args.seeds)} at lr {avg_lr:g} averaged (label log-posteriors): test {averaged:.3f}")
    print("\n".join(table), flush=True)

    def report() -> None:
        if args.report is None:
            return
        (args.report / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        (args.report / "summary.txt").write_text("\n".join(table) + "\n")
        for name, (_, _, out) in list(runs.items())[:4]:  # the device returns 8 files at most
            shutil.copy(out / "results.json", args.report / f"{name}.json")

    report()  # now, so a call cut off while the student trains still brings the table back
    if args.student_steps:
        res = student(args, pre, runs[picked["run"]][2], picked["lr"], work)
        summary["student"] = {
            "teacher": f"{picked['run']} + bag of words at weight {args.bow_weight}",
            "steps": args.student_steps,
            "val_accuracy": res["best_val"],
            "test_accuracy": res["finetuned"]["accuracy"],
            "test_accuracy_logprob": res["finetuned"]["accuracy_logprob"],
        }
        summary["seconds"] = round(time.perf_counter() - start)
        table.append(
            f"student of {picked['run']} + bag of words ({args.student_steps} steps): val {res['best_val']:.3f}, "
            f"test {res['finetuned']['accuracy']:.3f} (label log-prob {res['finetuned']['accuracy_logprob']:.3f})"
        )
        print(table[-1], flush=True)
        report()
        if args.report is not None:
            shutil.copy(work / "student" / "results.json", args.report / "student.json")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("pack", help="write .carry/ here: the corpus (xz) and the docstring-topic split")
    pk.add_argument("--cache-dir", default=None, help="where offline-mix is built (default: stlm's cache)")
    pk.add_argument("--no-wheels", dest="wheels", action="store_false", help="skip fetching platformdirs' wheel")
    r = sub.add_parser("run", help="on the GPU: pretrain, fine-tune, report")
    r.add_argument("--work", type=Path, default=Path("/tmp/gpu-topic"), help="everything run writes")
    r.add_argument("--report", type=Path, default=None, help="copy the table and results here (e.g. $OUT)")
    r.add_argument("--minutes", type=float, default=4.0, help="pretraining wall-clock, spent as measured steps")
    r.add_argument("--model", default=MODEL)
    r.add_argument("--set", action="append", default=None, help=f"model settings (default: {' '.join(MODEL_SETS)})")
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--seq-len", type=int, default=512)
    r.add_argument("--pretrain-lr", type=float, default=6e-4)
    r.add_argument("--probe-steps", type=int, default=30)
    r.add_argument("--lrs", type=float, nargs="+", default=[5e-4, 1e-3])
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    r.add_argument("--ft-steps", type=int, default=300)
    r.add_argument("--ft-eval-every", type=int, default=50)
    r.add_argument("--ft-threads", type=int, default=2)
    r.add_argument("--student-steps", type=int, default=900, help="the co-training student's steps (0: no student)")
    r.add_argument("--student-eval-every", type=int, default=150)
    r.add_argument("--bow-weight", type=float, default=0.75, help="bag of words' weight in the student's teacher")
    r.add_argument("--device", default="auto")
    r.add_argument("--precision", default="auto")
    args = p.parse_args(argv)
    if args.command == "pack":
        pack(args)
    else:
        if args.set is None:
            args.set = list(MODEL_SETS)
        run(args)


if __name__ == "__main__":
    main()
