"""Fine-tuning: a pretrained (or freshly initialised) model learns a text-to-text task.

    FinetuneConfig -> model (checkpoint or preset) -> examples (built-in or files)
                   -> text-to-text pairs (finetune/format.py: batch format and loss)
                   -> step (training/step.py: runtime options, optimizer, one train_step, the
                      non-finite policy; the same step pretraining uses)
                   -> validation (loss + metric on greedy outputs)
                   -> best checkpoint, early stopping -> test scores beside baselines -> results.json

A run folder holds:

    out/
      config.json              the fine-tuning config, model config, tokenizer, data hashes
      data/{train,val,test}.jsonl   the examples of a built-in task (user files are hashed in place)
      metrics.jsonl            training loss every log step, validation scores every evaluation
      checkpoints/step-N/      the newest checkpoint, for --resume
      best/checkpoints/step-N/ the checkpoint with the best validation metric (load it like any run);
                               with --refit (train on train + val) the last step's
      results.json             test scores of the starting model, the best checkpoint and the baselines,
                               with model, checkpoint hash, data hashes and settings

The examples of step s are fixed by (seed, s): each epoch is a seeded
permutation, so a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stlm import checkpoint as ckpt_io
from stlm import registry
from stlm.config import apply_resume_overrides
from stlm.errors import UserError
from stlm.evaluation.record import checkpoint_record, provenance
from stlm.finetune.config import FinetuneConfig
from stlm.finetune.evaluate import Scored, baselines, label_log_prior, score_examples, significance
from stlm.finetune.examples import Example, check_labels, load_examples, split_examples, write_jsonl
from stlm.finetune.format import TextToText, as_channel, cut_utf8
from stlm.finetune.soft import SoftLabels
from stlm.runtime import decoding_runtime, describe_training, resolve_runtime, run_header, seed_everything
from stlm.training import distributed
from stlm.training.distill import check_cache_named, distilled, load_teacher
from stlm.training.logging import MetricsLog
from stlm.training.loop import check_teacher_named
from stlm.training.optim import lr_at, resolve_warmup
from stlm.training.step import progress_bar, setup, train_step

RESULTS = "results.json"
METRICS = {  # what early stopping may watch, by task kind
    "summarization": ("rougeL", "rouge1", "rouge2", "loss"),
    "qa": ("f1", "exact_match", "loss"),
    "classification": ("accuracy", "accuracy_logprob", "loss"),
}
BEST = "best"
# A resumed run on the user's own files reads them only where the user names them again (--train,
# --val, --test): a checkpoint names no path stlm reads. They must hold the same examples.
TASK_FILES = ("train_file", "val_file", "test_file")
# What a resumed fine-tuning run may change: how long it runs, how often it logs and validates,
# how many checkpoints it keeps, where it runs.
RESUME_SAFE_KEYS = (
    "distill.teacher",  # a moved teacher; load_teacher checks it is the recorded one by its weights hash
    "distill.cache",  # named again on resume, anywhere (check_cache_named): a cache, not the run's state
    "train.steps",
    "train.log_every",
    "train.eval_every",
    "train.keep_checkpoints",
    "runtime.device",
    "runtime.threads",
)


@dataclass
class FinetuneResult:
    out: Path
    step: int
    best_step: int
    best_checkpoint: Path
    stopped_early: bool
    results: dict[str, Any]  # what results.json holds


@dataclass
class TaskData:
    kind: str
    train: list[Example]
    val: list[Example]
    test: list[Example]  # empty when there is no test file: the final scores are on validation
    labels: list[str]
    files: dict[str, Path]  # split -> file, for hashes


def finetune(
    cfg: FinetuneConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overrides: dict[str, object] | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune as `cfg` says into `out`, holding the folder's writer lock (see `_finetune`).

    `--resume` may name the run's newest checkpoint as well as the run folder.
    """
    if resume:
        out = ckpt_io.resume_target(out)
    else:
        ckpt_io.check_output(Path(out))
    with ckpt_io.run_lock(Path(out)):
        return _finetune(cfg, out, resume=resume, overrides=overrides, progress=progress)


def _finetune(
    cfg: FinetuneConfig,
    out: str | Path,
    *,
    resume: bool,
    overrides: dict[str, object] | None,
    progress: bool,
) -> FinetuneResult:
    """Fine-tune as `cfg` says into `out`, a new folder.

    With `resume=True`, continue the run in `out` from its newest checkpoint
    instead: `cfg` is not used, the run's own config is, with `overrides`
    (dotted keys) changing the settings in `RESUME_SAFE_KEYS`; any other that
    differs raises a UserError naming it. On a new run `overrides` apply to `cfg`.
    """
    out = Path(out)
    latest = ckpt_io.newest_verified(out) if resume else None
    if resume:
        if latest is None:
            raise UserError(f"{out} holds no complete fine-tuning checkpoint to resume from")
        saved = ckpt_io.load_config(latest)
        if "finetune" not in saved:
            raise UserError(
                f"{latest} is not a fine-tuning checkpoint (resume pretraining runs with stlm train --resume)"
            )
        cfg = FinetuneConfig.from_dict(saved["finetune"], source=f"{latest}/config.json")
        ckpt_io.read_state(latest, total=cfg.train.steps)  # an impossible step: refused before anything is written
        overrides = dict(overrides or {})
        named = {k: overrides.pop(f"task.{k}") for k in TASK_FILES if f"task.{k}" in overrides}
        check_teacher_named(cfg.distill.teacher, overrides, out)
        check_cache_named(cfg.distill.cache, overrides, out)
        cfg = apply_resume_overrides(cfg, overrides, RESUME_SAFE_KEYS, run_dir=out)
        cfg = dataclasses.replace(cfg, task=files_named_again(cfg.task, named, out))
    else:
        if (out / "config.json").exists() or ckpt_io.list_checkpoints(out):
            raise UserError(f"{out} already holds a run; resume it with --resume {out} or choose another --out")
        cfg = cfg.with_overrides(overrides or {})
        cfg = dataclasses.replace(cfg, optim=resolve_warmup(cfg.optim, cfg.train.steps))

    runtime = resolve_runtime(cfg.runtime)
    decoding = decoding_runtime(cfg.runtime, runtime)  # the answers' precision (`auto` on a CPU: the generate probe's)
    par = distributed.Parallel(mode="none", rank=0, world_size=1, runtime=runtime)  # fine-tuning is one process
    seed_everything(cfg.train.seed)
    family, model_cfg, model, tokenizer, init_ckpt = _starting_model(cfg, latest)
    if latest is not None:  # the weights came from the run itself; record where it started
        init_ckpt = saved.get("init_checkpoint")
    metric = cfg.metric()
    if metric not in METRICS[cfg.task.resolved_kind()]:
        known = ", ".join(METRICS[cfg.task.resolved_kind()])
        raise UserError(
            f"train.metric {metric!r} is not scored for {cfg.task.resolved_kind()} tasks; choose one of {known}"
        )
    max_len = family.max_len(model_cfg)
    channel = cfg.task.direction == "channel"  # the model reads the label and learns the input
    read_bytes, write_bytes = cfg.task.max_input_bytes, cfg.task.max_target_bytes
    if channel:
        read_bytes, write_bytes = write_bytes, read_bytes
    fmt = TextToText(family, tokenizer, cfg.task.separator, read_bytes, write_bytes, max_len)
    kd_cache = None  # the teacher's outputs on disk (--kd-cache)
    step_objective, teacher_record = fmt, None
    if cfg.distill.teacher is not None:  # before anything is written: a wrong teacher is refused at once
        recorded = saved.get("distill") or {} if latest is not None else None
        teacher, teacher_record = load_teacher(cfg.distill, tokenizer, runtime.device, recorded=recorded)
        step_objective = distilled(
            fmt, teacher, cfg.distill, teacher_record=teacher_record, tokenizer=tokenizer, progress=progress
        )
        kd_cache = step_objective.cache
    if progress:
        print(
            f"stlm finetune: loading the {cfg.task.name or cfg.task.train_file} examples", file=sys.stderr, flush=True
        )
    data = load_task_data(cfg, out)
    refit = cfg.train.refit
    if refit and not data.test:
        raise UserError(
            "--refit trains on the validation examples too, which leaves nothing held out to score: give --test"
        )
    train = data.train + data.val if refit else data.train  # what the steps read
    train_pairs = as_channel(train) if channel else train
    batcher: TextToText | SoftLabels = fmt  # what turns training examples into tensors
    if any(ex.probs for ex in data.train):
        if cfg.distill.teacher is not None:
            raise UserError("soft labels (probs) and --teacher both set the label's targets; use one of them")
        step_objective = batcher = SoftLabels(fmt)
    label_prior = label_log_prior(train, data.labels) if channel else []
    fingerprint = examples_fingerprint(data)
    if latest is not None and saved.get("task", {}).get("fingerprint") not in (None, fingerprint):
        raise UserError(
            f"the files named hold other examples than the ones {out} was fine-tuned on; "
            "a run resumes on its own data: name its own files"
        )
    max_new = cfg.train.max_new_tokens or min(
        cfg.task.max_target_bytes + 8, max(len(tokenizer.encode(ex.target)) for ex in train) + 8
    )
    lower_is_better = metric == "loss"
    eval_set = _sample(data.val, cfg.train.eval_examples, cfg.train.seed)
    final_set, final_name = (data.test, "test") if data.test else (data.val, "val")

    resolved = ckpt_io.RunRecord(
        family,
        model_cfg,
        tokenizer.to_dict(),
        {
            "finetune": cfg.to_dict(),
            "task": {
                "kind": data.kind,
                "labels": data.labels,
                "metric": metric,
                "max_new_tokens": max_new,
                "sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
                "refit": refit,
                "fingerprint": fingerprint,
            },
            "init_checkpoint": None if init_ckpt is None else str(init_ckpt),
            **({"distill": teacher_record} if teacher_record is not None else {}),
        },
    )

    def log(row: dict[str, Any]) -> None:
        metrics_log.write(row)

    trainer = setup(
        model, cfg.optim, par, run_dir=out, nonfinite_skips=cfg.train.nonfinite_skips, report=log, progress=progress
    )

    def evaluate(examples: list[Example], bar: bool = False) -> Scored:
        return trainer.evaluate(
            lambda plain: score_examples(
                plain,
                fmt,
                examples,
                kind=data.kind,
                labels=data.labels,
                max_new_tokens=max_new,
                batch_size=cfg.train.batch_size,
                device=runtime.device,
                autocast=runtime.autocast(),
                decode_autocast=decoding.autocast(),
                progress=bar and progress,
                direction=cfg.task.direction,
                label_prior=label_prior,
            )
        )

    def save_best(step: int) -> None:
        trainer.check_weights(step)  # a NaN checkpoint is never written
        ckpt_io.save_checkpoint(out / BEST, step, model=model, optimizer=None, config=resolved, state=state, keep=1)

    state: dict[str, Any] = {"best": None, "best_step": 0, "bad_evals": 0, "initial": None, "stopped_early": False}
    start = 0
    if latest is not None:
        saved_state = trainer.restore(latest)
        start = int(saved_state["step"])
        state.update({k: saved_state[k] for k in state if k in saved_state})
    else:
        out.mkdir(parents=True, exist_ok=True)
        ckpt_io.write_run_config(
            out, {**resolved.to_dict(), "header": run_header(describe_training(runtime, decoding))}
        )
        if cfg.train.score_initial:
            if progress:
                print(
                    f"  scoring the starting model on {final_name} ({len(final_set)} examples)",
                    file=sys.stderr,
                    flush=True,
                )
            state["initial"] = evaluate(final_set, bar=True).metrics

    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    if progress:
        judged = (
            "trained on train + val, the last step kept (refit)"
            if refit
            else f"early stopping on val {metric} (patience {cfg.train.patience})"
        )
        print(
            f"  {cfg.init} ({family.name}, {n_params:,} params) on {describe_training(runtime, decoding)}; {data.kind}: "
            f"{len(data.train)} train / {len(data.val)} val / {len(data.test)} test examples; "
            f"{cfg.train.steps} steps of {cfg.train.batch_size}, {judged}",
            file=sys.stderr,
            flush=True,
        )
    metrics_log = MetricsLog(out / "metrics.jsonl", resume_step=start if latest is not None else None)

    bar = progress_bar("finetune", cfg.train.steps, start, progress)
    step = start
    loss_sum, loss_n = torch.zeros((), device=runtime.device), 0  # over the updates of a log interval
    shown: dict[str, str] = {}  # the latest training loss and validation score, kept on the progress bar
    t0 = time.perf_counter()
    trainer.model.train()
    while step < cfg.train.steps:
        lr = lr_at(step, cfg.train.steps, cfg.optim)
        examples = [train_pairs[i] for i in batch_indices(step, cfg.train.batch_size, len(train_pairs), cfg.train.seed)]
        result = train_step(trainer, step_objective, [batcher.batch(examples)], step=step, lr=lr)
        step += 1
        bar.update(1)
        if result.applied:
            loss_sum, loss_n = loss_sum + result.loss, loss_n + 1
        if step % cfg.train.log_every == 0 and loss_n:
            mean = float(loss_sum) / loss_n
            metrics_log.write({"step": step, "loss": mean, "lr": lr, "elapsed_s": time.perf_counter() - t0})
            shown["loss"] = f"{mean:.3f}"
            bar.set_postfix(**shown, refresh=False)
            loss_sum, loss_n = torch.zeros_like(loss_sum), 0
        checkpoint_due = step % cfg.train.eval_every == 0 or step == cfg.train.steps
        if checkpoint_due and refit:
            if step == cfg.train.steps:  # nothing is held out to choose by: the last step is the result
                state.update(best_step=step)
                save_best(step)
            trainer.save(step, record=resolved, state=state, keep=cfg.train.keep_checkpoints)
        elif checkpoint_due:
            val = evaluate(eval_set).metrics
            metrics_log.write({"step": step, **{f"val_{k}": v for k, v in val.items()}})
            value = val[metric]
            improved = state["best"] is None or (value < state["best"] if lower_is_better else value > state["best"])
            if improved:
                state.update(best=value, best_step=step, bad_evals=0)
                save_best(step)
            else:
                state["bad_evals"] += 1
            shown.update({f"val_{metric}": f"{value:.3f}", "best": f"{state['best']:.3f}"})
            bar.set_postfix(**shown, refresh=False)
            state["stopped_early"] = bool(cfg.train.patience and state["bad_evals"] >= cfg.train.patience)
            trainer.save(step, record=resolved, state=state, keep=cfg.train.keep_checkpoints)
            if state["stopped_early"]:
                break
    bar.close()
    if kd_cache is not None and progress:
        print(f"  {kd_cache.describe()}", file=sys.stderr)

    best_ckpt = ckpt_io.latest_checkpoint(out / BEST)
    ckpt_io.load_weights(model, best_ckpt)
    if progress:
        which = "last" if refit else "best"
        print(
            f"  scoring the {which} checkpoint (step {state['best_step']}) on {final_name}", file=sys.stderr, flush=True
        )
    final = evaluate(final_set, bar=True)
    base = baselines(data.kind, data.train, final_set, data.val if final_name == "test" else (), refit=refit)
    results = {
        "task": cfg.task.name or data.kind,
        "kind": data.kind,
        "direction": cfg.task.direction,
        "scored_on": final_name,
        "metric": metric,
        "initial": state["initial"],
        "finetuned": final.metrics,
        "baselines": {name: {k: v for k, v in b.items() if k != "predictions"} for name, b in base.items()},
        "significance": significance(final.predictions, final_set, base) if data.kind == "classification" else None,
        "predictions": per_example(final_set, final, base, cfg.task.max_input_bytes, data.labels),
        "best_step": state["best_step"],
        "steps_run": step,
        "stopped_early": state["stopped_early"],
        "best_val": state["best"],
        "refit": refit,
        "provenance": {
            **provenance(
                model=model,
                config={**resolved.to_dict(), "run": {"model": cfg.init}},
                checkpoint=best_ckpt,
                data_files=data.files.values(),
                settings=resolved.sections["finetune"],
                device=str(runtime.device),
            ),
            "init": {"model": cfg.init, "checkpoint": None if init_ckpt is None else checkpoint_record(init_ckpt)},
        },
    }
    ckpt_io.write_json_atomic(out / RESULTS, results)
    return FinetuneResult(out, step, state["best_step"], best_ckpt, state["stopped_early"], results)


def per_example(
    examples: list[Example],
    scored: Scored,
    base: dict[str, dict[str, Any]],
    max_input_bytes: int,
    labels: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per scored example, in split order: what the model read, the reference, its answers
    (greedy, and by label log-probability for classification, with each label's score), and each
    baseline's answer when it has them."""
    rows = []
    for i, ex in enumerate(examples):
        row: dict[str, Any] = {"index": i, "input": cut_utf8(ex.input, max_input_bytes), "target": ex.target}
        row["prediction"] = scored.predictions[i]
        if scored.chosen:
            row["prediction_logprob"] = scored.chosen[i]
        if scored.label_scores:
            row["label_scores"] = dict(zip(labels, scored.label_scores[i]))
        for name, b in base.items():
            if "predictions" in b:
                row[name] = b["predictions"][i]
        rows.append(row)
    return rows


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Example indices of step `step`: epochs are seeded permutations of range(n), read in order."""
    start = step * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.extend(int(i) for i in perm[offset : offset + batch_size - len(out)])
    return out


def _sample(examples: list[Example], n: int, seed: int) -> list[Example]:
    """A fixed random subset of n examples (all when n is 0 or covers them), in their original order."""
    if not n or n >= len(examples):
        return examples
    keep = np.sort(np.random.default_rng([seed, len(examples)]).permutation(len(examples))[:n])
    return [examples[i] for i in keep]


def load_task_data(cfg: FinetuneConfig, out: Path) -> TaskData:
    """The train / val / test examples of a built-in task or of the configured files, checked."""
    task = cfg.task
    kind = task.resolved_kind()
    if task.name:
        from stlm.finetune.pydocs_tasks import build_task

        splits = build_task(task.name)
        files = {}
        (out / "data").mkdir(parents=True, exist_ok=True)
        for split, examples in splits.items():
            files[split] = out / "data" / f"{split}.jsonl"
            if not files[split].exists():  # a resumed run keeps the files it hashed
                write_jsonl(files[split], examples)
        train, val, test = splits["train"], splits["val"], splits["test"]
    else:
        read = dict(input_field=task.input_field, target_field=task.target_field, context_field=task.context_field)
        files = {"train": Path(task.train_file)}
        train = load_examples(task.train_file, **read, probs_field=task.probs_field)
        check_soft_labels(train, task)
        if task.val_file:
            files["val"] = Path(task.val_file)
            val = load_examples(task.val_file, **read)
        else:  # validation is held out from the hard-labelled rows only: it is judged against targets
            soft = [ex for ex in train if ex.probs]
            train, val = split_examples([ex for ex in train if not ex.probs], task.val_fraction, task.split_seed)
            train += soft
        test = []
        if task.test_file:
            files["test"] = Path(task.test_file)
            test = load_examples(task.test_file, **read)
    labels: list[str] = []
    if kind == "classification":
        labels = task.label_set()
        if labels:
            check_labels(train, labels, what="training")
            check_labels([Example("", label, ex.where) for ex in train for label, _ in ex.probs], labels, what="soft")
        else:
            labels = sorted({ex.target.strip() for ex in train} | {label for ex in train for label, _ in ex.probs})
        check_labels(val, labels, what="validation")
        check_labels(test, labels, what="test")
        if task.direction == "channel":  # the input is what a channel model scores: it must have one
            for ex in train + val + test:
                if not ex.input.strip():
                    raise UserError(f"{ex.where or 'an example'}: empty input; a channel classifier scores the input")
    return TaskData(kind, train, val, test, labels, files)


def check_soft_labels(train: list[Example], task: Any) -> None:
    """Soft labels (`probs`) train the direct direction of a classification task, and nothing else."""
    soft = next((ex for ex in train if ex.probs), None)
    if soft is None:
        return
    if task.resolved_kind() != "classification":
        raise UserError(
            f"{soft.where}: a soft label ({task.probs_field!r}) is for classification tasks; "
            f"this task is {task.resolved_kind()} (add --kind classification, or drop the field)"
        )
    if task.direction != "direct":
        raise UserError(f"{soft.where}: soft labels train the direct direction; drop --direction {task.direction}")


def files_named_again(task: Any, named: dict[str, str], out: Path) -> Any:
    """The recorded task with the data files the user named again on resume (see TASK_FILES)."""
    recorded = [k for k in TASK_FILES if getattr(task, k)]
    flag = {"train_file": "--train", "val_file": "--val", "test_file": "--test"}
    if not recorded and named:
        raise UserError(f"{out} fine-tunes the built-in task {task.name!r}; it takes no data files on resume")
    missing = [k for k in recorded if k not in named]
    if missing:
        again = " ".join(f"{flag[k]} {getattr(task, k)}" for k in recorded)
        raise UserError(
            f"{out} was fine-tuned on your own files; stlm reads no path a checkpoint names: "
            f"resume with {again} (or wherever those files are now)"
        )
    extra = [k for k in named if k not in recorded]
    if extra:
        raise UserError(f"{flag[extra[0]]} was not part of {out}'s run; resume with the files it was fine-tuned on")
    return dataclasses.replace(task, **{k: str(v) for k, v in named.items()})


def examples_fingerprint(data: TaskData) -> str:
    """A hash of every example of every split, in order: what a resumed run must find again."""
    digest = hashlib.sha256()
    for split in (data.train, data.val, data.test):
        for ex in split:
            digest.update(ex.to_json().encode("utf-8") + b"\n")
        digest.update(b"\x00")
    return digest.hexdigest()


def with_dropout(family: Any, model_cfg: Any, model: nn.Module, dropout: float | None) -> tuple[Any, nn.Module]:
    """(config, model) with the same weights and `dropout` (None, or the model's own: unchanged)."""
    if dropout is None or dropout == model_cfg.dropout:
        return model_cfg, model
    model_cfg = dataclasses.replace(model_cfg, dropout=dropout)
    rebuilt = family.build(model_cfg)
    rebuilt.load_state_dict(model.state_dict())
    return model_cfg, rebuilt


def _starting_model(cfg: FinetuneConfig, resume_from: Path | None):
    """(family, model config, model, tokenizer, the checkpoint it came from or None)."""
    source = resume_from
    if source is None and Path(cfg.init).exists():
        source = ckpt_io.resolve_checkpoint(cfg.init)
    if source is not None:
        loaded = ckpt_io.load(source)
        model_cfg, model = with_dropout(loaded.family, loaded.model_config, loaded.model, cfg.dropout)
        return loaded.family, model_cfg, model.train(), loaded.tokenizer, source
    family, model_cfg = registry.resolve_model(cfg.init)
    if cfg.dropout is not None:
        model_cfg = dataclasses.replace(model_cfg, dropout=cfg.dropout)
    return family, model_cfg, family.build(model_cfg), family.resolve_tokenizer(cfg.tokenizer, model_cfg), None
