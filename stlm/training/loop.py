"""The pretraining loop: from a run config to checkpoints and metrics.

The config flows down once:

    RunConfig -> registry (preset + model.<key> settings -> model config) -> tokenizer
              -> data (cached token shards, seeded window loader) -> model
              -> objective (next-token | span corruption: batch format and loss)
              -> step (training/step.py: runtime, parallelism, optimizer, one train_step)
              -> validation, checkpoints, metrics

Resuming restores weights, optimizer, RNG and the loader's position, and the
schedule is a function of the step and the total alone, so N steps straight
and N/2 + resume + N/2 end with the same weights. `resume` may change the
settings in `RESUME_SAFE_KEYS` (extend the run, move it, log differently) and
refuses any other.

A checkpoint never decides where stlm writes: a resumed run's token cache is
the user's `data.cache_dir` (--cache-dir) or the user cache folder, never the
one recorded (the cache is keyed by content, so it is only rebuilt). Nor does it
decide what stlm reads: a built-in corpus or an hf: dataset is a name and is
read as recorded, but a run trained on a local file or folder resumes only when
the user names it again (`--data PATH`, where it is now), and only on the same
documents (the corpus fingerprint the run recorded).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stlm import checkpoint as ckpt_io
from stlm import registry
from stlm.config import RunConfig, apply_resume_overrides
from stlm.data import WindowLoader, local_path, prepare_data
from stlm.data.download import cache_root
from stlm.errors import UserError
from stlm.families import ModelFamily
from stlm.objectives.base import build_objective
from stlm.runtime import Runtime, resolve_runtime, run_header, seed_everything
from stlm.training import distributed
from stlm.training.distill import check_cache_named, distilled, load_teacher
from stlm.training.logging import MetricsLog, format_header
from stlm.training.monitor import (
    PEAK_CACHE,
    RunMonitor,
    device_peak,
    step_flops_per_token,
)
from stlm.training.optim import lr_at, resolve_warmup
from stlm.training.report import TrainResult, write_run_report
from stlm.training.step import StopSignal, local, progress_bar, setup, train_step

RUN_CONFIG = "config.json"
METRICS = "metrics.jsonl"
# What a resumed run may change: how long it runs (train.steps; see training/optim.py for what
# extending does to the schedule), where it runs, and how it reports and checkpoints.
RESUME_SAFE_KEYS = (
    "distill.teacher",  # a moved teacher; load_teacher checks it is the recorded one by its weights hash
    "distill.cache",  # named again on resume, anywhere (check_cache_named): a cache, not the run's state
    "train.steps",
    "train.log_every",
    "train.eval_every",
    "train.save_every",
    "train.keep_checkpoints",
    "train.tensorboard",
    "data.cache_dir",
    "runtime.device",
    "runtime.threads",
)

# A run trained on a local corpus names it again on resume (--data, where it is now; see above).
RESUME_NAMED_AGAIN = ("data.source",)


@dataclass
class _Start:
    """Where a run starts from: everything resolved before any process does work."""

    cfg: RunConfig  # warmup written out
    family: ModelFamily
    model_cfg: Any
    tokenizer: Any
    run_dir: Path
    checkpoint: Path | None  # None: a new run
    fingerprint: str | None = None  # a resumed run's recorded corpus fingerprint, when its data is a local path
    init: Path | None = None  # a new run that continues this checkpoint's weights (cfg.model names a run)
    init_record: str | None = None  # the checkpoint a continued run started from, as its record names it


def train(cfg: RunConfig, run_dir: str | Path, *, stop_at: int | None = None, progress: bool = True) -> TrainResult:
    """Start a new run in `run_dir` (which must not hold checkpoints yet)."""
    run_dir = Path(run_dir)
    init = ckpt_io.resolve_checkpoint(cfg.model) if Path(cfg.model).exists() else None
    ckpt_io.check_output(run_dir, reads=[init, ckpt_io.run_folder(init)] if init is not None else [])
    with writer_lock(run_dir):
        check_new_run_dir(run_dir)
        cfg = dataclasses.replace(cfg, optim=resolve_warmup(cfg.optim, cfg.train.steps))
        if init is not None:
            family, model_cfg, tokenizer = continued_model(cfg, init)
        else:
            family, model_cfg = registry.resolve_model(cfg.model, cfg.arch)
            family.check_objective(cfg.objective.name, cfg.model)
            model_cfg = family.for_objective(model_cfg, cfg.objective.name)  # mtp:K: the model gets its K-1 heads
            family.check_fits(model_cfg)  # before the data is prepared: a model too large is refused at once
            tokenizer = family.resolve_tokenizer(cfg.data.tokenizer, model_cfg)
        named = None if init is None else str(init)
        start = _Start(cfg, family, model_cfg, tokenizer, run_dir, None, init=init, init_record=named)
        return _run(start, stop_at=stop_at, progress=progress)


def continued_model(cfg: RunConfig, init: Path) -> tuple[ModelFamily, Any, Any]:
    """(family, model config, tokenizer) of the checkpoint a run continues: its own, whatever the
    preset defaults say. Settings that would need another shape or tokenizer are refused."""
    record = ckpt_io.read_record(init / RUN_CONFIG)
    family, model_cfg = record.family, record.model_config
    if cfg.arch:
        key = sorted(cfg.arch)[0]
        raise UserError(
            f"model.{key} cannot be set when continuing {cfg.model}: its weights fit its own shape only "
            "(start a new run from a preset to change the architecture)"
        )
    if cfg.data.tokenizer != "auto":
        raise UserError(
            f"--tokenizer {cfg.data.tokenizer} cannot be used when continuing {cfg.model}: "
            "a run continues with its checkpoint's own tokenizer; leave --tokenizer unset"
        )
    family.check_objective(cfg.objective.name, cfg.model)
    if family.for_objective(model_cfg, cfg.objective.name) != model_cfg:
        raise UserError(
            f"--objective {cfg.objective.name} needs another model shape (its multi-token heads) than "
            f"{cfg.model} has; continue it with the objective it was trained with, or start from a preset"
        )
    family.check_fits(model_cfg)
    return family, model_cfg, family.check_tokenizer(record.load_tokenizer(), "auto", model_cfg)


def writer_lock(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """The run folder's writer lock (`stlm.checkpoint.run_lock`); under torchrun rank 0 holds it for all."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return ckpt_io.run_lock(run_dir)


def check_teacher_named(recorded: str | None, overrides: dict[str, object], run_dir: Path) -> None:
    """A distilled run resumes only with its teacher named again (--teacher, where it is now): a checkpoint
    names no path stlm reads; `load_teacher` then checks it is the recorded teacher by its weights hash."""
    if recorded is not None and overrides.get("distill.teacher") is None:
        raise UserError(
            f"{run_dir} distils from the teacher {recorded}; stlm reads no path a checkpoint names: "
            f"resume with --teacher {recorded} (or wherever that run is now)"
        )


def check_new_run_dir(run_dir: Path) -> None:
    """A UserError if `run_dir` already holds a run (a config or any checkpoint)."""
    if ckpt_io.list_checkpoints(run_dir) or (run_dir / RUN_CONFIG).exists():
        raise UserError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose another --out")


def resume(
    run_dir: str | Path,
    *,
    overrides: dict[str, object] | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Continue the run in `run_dir` from its newest complete checkpoint.

    `overrides` (dotted keys, as `RunConfig.with_overrides` takes them) may
    change the settings in `RESUME_SAFE_KEYS`; any other that differs from the
    run's own raises a UserError naming it.
    """
    # A checkpoint folder resumes into its run (the newest verified one only: an older one would
    # write over newer checkpoints); a run folder from its newest verified checkpoint.
    run_dir = ckpt_io.resume_target(run_dir)
    with writer_lock(run_dir):
        latest = ckpt_io.newest_verified(run_dir)  # again, under the lock: what no other writer changes now
        if latest is None:
            ckpt_io.check_none_saved(run_dir)  # checkpoints that all fail verification: never start over on them
        if latest is None and (run_dir / RUN_CONFIG).is_file():  # killed before its first checkpoint: start over
            source = run_dir / RUN_CONFIG
        elif latest is None:
            raise UserError(f"{run_dir} holds no complete checkpoint to resume from")
        else:
            source = latest / RUN_CONFIG
        record = ckpt_io.read_record(source)
        init = record.sections.get("init_checkpoint")  # provenance only: never read
        if latest is None and init is not None:  # starting over needs the checkpoint it continues: a path it records
            raise UserError(
                f"{run_dir} stopped before its first checkpoint, and stlm reads no path a run records: "
                f"start it again with --model {init} (or wherever that checkpoint is now) and a new --out"
            )
        record.family.check_fits(record.model_config)
        saved = RunConfig.from_dict(record.sections.get("run", {}), source=str(source))
        if latest is not None:  # an impossible step is refused before anything is written
            ckpt_io.read_state(latest, total=saved.train.steps)
        overrides = dict(overrides or {})
        given_source = overrides.pop("data.source", None)
        check_teacher_named(saved.distill.teacher, overrides, run_dir)
        check_cache_named(saved.distill.cache, overrides, run_dir)
        cfg = apply_resume_overrides(saved, overrides, RESUME_SAFE_KEYS, run_dir=run_dir)
        # Where to write the cache comes from the user, never from the checkpoint.
        data = dataclasses.replace(cfg.data, cache_dir=overrides.get("data.cache_dir"))
        fingerprint = None
        if local_path(saved.data.source) is not None:  # a path: read only what the user names
            if given_source is None:
                raise UserError(
                    f"{run_dir} was trained on the local corpus {saved.data.source}; stlm reads no path a "
                    f"checkpoint names: resume with --data {saved.data.source} (or wherever that corpus is now)"
                )
            data_path = local_path(str(given_source))
            if data_path is None or not data_path.exists():
                raise UserError(f"--data {given_source} does not exist; name the corpus {run_dir} was trained on")
            data = dataclasses.replace(data, source=str(given_source))
            fingerprint = (record.sections.get("data") or {}).get("fingerprint")
        elif given_source is not None and given_source != saved.data.source:
            raise UserError(
                f"{run_dir} was trained on {saved.data.source}; a run resumes on its own data, "
                f"not on {given_source}: start a new run for other data"
            )
        cfg = dataclasses.replace(cfg, data=data)
        # The recorded model and tokenizer, not the preset and spec: a BPE tokenizer.json may have moved since.
        tokenizer = record.family.check_tokenizer(record.load_tokenizer(), cfg.data.tokenizer, record.model_config)
        start = _Start(
            cfg, record.family, record.model_config, tokenizer, run_dir, latest, fingerprint, init_record=init
        )
        return _run(start, stop_at=stop_at, progress=progress)


def _run(start: _Start, *, stop_at: int | None, progress: bool) -> TrainResult:
    """One process's share of a run: alone, or inside torchrun's process group."""
    with distributed.session(start.cfg.runtime.parallel, resolve_runtime(start.cfg.runtime)) as par:
        is_main = par.is_main
        result = _train(par, start, stop_at=stop_at, progress=progress and is_main)
    if is_main:  # after the process group is gone: no rank waits on the report
        _write_report(result, stop_at, progress)
    return result


def _write_report(result: TrainResult, stop_at: int | None, progress: bool) -> None:
    """report.md and loss.png in the run folder; the run (already saved) survives a failure to write them."""
    stopped = None
    if result.interrupted:
        stopped = (
            f"as --stop-at {stop_at} asked"
            if stop_at is not None and result.step >= stop_at
            else "interrupted by a signal"
        )
    try:
        path = write_run_report(result, stopped=stopped)
    except (OSError, UserError) as exc:
        print(f"  report.md not written: {exc}", file=sys.stderr)
        return
    if progress:
        print(f"  report {path}", file=sys.stderr)


def _train(par: distributed.Parallel, start: _Start, *, stop_at: int | None, progress: bool) -> TrainResult:
    cfg, family, model_cfg, run_dir, resume_from = (
        start.cfg,
        start.family,
        start.model_cfg,
        start.run_dir,
        start.checkpoint,
    )
    runtime = par.runtime
    seed_everything(cfg.train.seed)
    family.check_objective(cfg.objective.name, cfg.model)
    objective = build_objective(cfg.objective, cfg.data.seq_len, start.tokenizer, steps=cfg.train.steps)
    kd_cache = None  # the teacher's outputs on disk (--kd-cache)
    step_objective, teacher_record = objective, None
    if cfg.distill.teacher is not None:  # before anything is written: a wrong teacher is refused at once
        recorded = None
        if resume_from is not None:
            recorded = ckpt_io.read_record(resume_from / RUN_CONFIG).sections.get("distill") or {}
        teacher, teacher_record = load_teacher(cfg.distill, start.tokenizer, runtime.device, recorded=recorded)
        step_objective = distilled(
            objective, teacher, cfg.distill, teacher_record=teacher_record, tokenizer=start.tokenizer, progress=progress
        )
        kd_cache = step_objective.cache
    max_len = family.max_len(model_cfg)  # None: relative positions have no length limit; rotary tables do
    if max_len is not None and cfg.data.seq_len > max_len:
        raise UserError(f"data.seq_len {cfg.data.seq_len} exceeds the model's max_seq_len {max_len}")
    with par.main_first():  # rank 0 fills the token cache, the others read it
        data = prepare_data(
            cfg.data.source,
            start.tokenizer,
            cache_dir=cfg.data.cache_dir,
            val_fraction=cfg.data.val_fraction,
            seed=cfg.data.split_seed,
            text_field=cfg.data.text_field,
            progress=progress,
            workers=cfg.data.workers,
            streaming=cfg.data.streaming,
            max_documents=cfg.data.max_documents,
        )
    if start.fingerprint is not None and data.meta.get("fingerprint") != start.fingerprint:
        raise UserError(
            f"--data {cfg.data.source} holds other documents than the corpus {start.run_dir} was trained on "
            "(its fingerprint differs); a run resumes on its own data"
        )
    model = family.build(model_cfg).to(runtime.device)
    loader = WindowLoader(
        data.train,
        objective.window_len - 1,
        par.local_batch(cfg.train.batch_size),
        cfg.train.seed,
        rank=par.rank,
        world_size=par.world_size,
        fixed_offset=cfg.distill.cache is not None,  # stored teacher outputs fit only the same windows
    )
    record = ckpt_io.RunRecord(
        family,
        model_cfg,
        start.tokenizer.to_dict(),
        {
            "run": cfg.to_dict(),
            "data": {k: data.meta.get(k) for k in ("fingerprint", "train", "val") if k in data.meta},
            **({"init_checkpoint": start.init_record} if start.init_record is not None else {}),
            **({"distill": teacher_record} if teacher_record is not None else {}),
        },
    )
    if resume_from is not None:
        ckpt_io.load_weights(model, resume_from)
    elif start.init is not None:  # continued pretraining: the weights (and fitted rules) of the checkpoint
        ckpt_io.load_weights(model, start.init)
    else:
        note = family.before_training(model, data.train)
        if note and progress:
            print(f"  {note}", file=sys.stderr)

    # Speed accounting: matmul FLOPs per token, counted once on the plain model (no compiled graph,
    # no recomputation, no collectives), against the device's matmul peak (training/monitor.py).
    header = _saved_header(run_dir) if resume_from is not None else run_header(runtime.describe())
    peak_cache = cache_root(cfg.data.cache_dir) / PEAK_CACHE

    def measure_peak() -> float:
        return device_peak(runtime.device, runtime.precision, cache_file=peak_cache).flops_per_s

    peak = device_peak(runtime.device, runtime.precision, cache_file=peak_cache, saved=header.get("matmul_peak"))
    header["matmul_peak"] = peak.to_dict(runtime.device, runtime.precision)
    flops_per_token = step_flops_per_token(
        model,
        objective,
        torch.zeros(cfg.train.batch_size, objective.window_len, dtype=torch.long),
        runtime,
        build_meta=lambda: family.build(model_cfg),
    )

    def log(row: dict[str, Any]) -> None:
        if metrics is not None:  # rank 0 writes for all
            metrics.write(row)
            monitor.write(row)

    trainer = setup(
        model, cfg.optim, par, run_dir=run_dir, nonfinite_skips=cfg.train.nonfinite_skips, report=log, progress=progress
    )
    start_step, elapsed_before = 0, 0.0
    if resume_from is not None:
        state = trainer.restore(resume_from)
        loader.load_state_dict(state["loader"])
        start_step, elapsed_before = int(state["step"]), float(state.get("elapsed_s", 0.0))
    elif par.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        header["allocator"] = runtime.allocator
        ckpt_io.write_run_config(run_dir, {**record.to_dict(), "header": header})
    metrics = MetricsLog(run_dir / METRICS, resume_step=start_step if resume_from else None) if par.is_main else None
    if progress:
        n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        _announce(cfg, runtime, n_params, data.meta, run_dir, start_step)
        print(format_header(header, flops_per_token), file=sys.stderr, flush=True)
    monitor = RunMonitor(
        device=runtime.device,
        flops_per_token=flops_per_token,
        peak_flops=peak.flops_per_s,
        total_steps=cfg.train.steps,
        start_step=start_step,
        remeasure=measure_peak,
        tensorboard_dir=run_dir / "tensorboard" if cfg.train.tensorboard and par.is_main else None,
    )

    def evaluate() -> dict[str, float]:
        return trainer.evaluate(
            lambda plain: par.validate(
                objective,
                plain,
                data.val,
                max_tokens=cfg.train.eval_tokens,
                batch_size=cfg.train.batch_size,
                device=runtime.device,
                autocast=runtime.autocast(),
            )
        )

    def save(step: int, elapsed: float) -> Path:
        state = {"loader": loader.state_dict(), "elapsed_s": elapsed}
        return trainer.save(step, record=record, state=state, keep=cfg.train.keep_checkpoints)

    def micro_batches(step: int) -> list[tuple[torch.Tensor, ...]]:
        batches = []
        for micro in range(cfg.train.grad_accum):
            window = loader.next_batch()  # (B / world_size, window_len) on CPU
            key = (cfg.train.seed, step, micro) + ((par.rank,) if par.distributed else ())
            batches.append(objective.batch(window, key))
        return batches

    total = cfg.train.steps
    step = start_step
    val: dict[str, float] | None = None
    checkpoint = resume_from
    t0 = window_t0 = time.perf_counter()
    bar = progress_bar("train", total, start_step, progress)
    window_bytes = window_tokens = 0
    stop_now = False  # a stop agreed by all ranks
    loss_value = float("nan")
    trainer.model.train()
    with StopSignal() as stop:
        while step < total:
            if stop_now or (stop.requested and not par.distributed) or (stop_at is not None and step >= stop_at):
                break
            lr = lr_at(step, total, cfg.optim)
            result = train_step(trainer, step_objective, micro_batches(step), step=step, lr=lr, stop=stop.requested)
            stop_now = result.stop
            window_tokens += result.tokens
            window_bytes += result.bytes
            step += 1
            bar.update(1)

            if step % cfg.train.log_every == 0 or step == total:
                loss_value = float(par.mean(result.loss))  # a host sync, once per log interval
                now = time.perf_counter()
                span = max(now - window_t0, 1e-9)
                row = {
                    "step": step,
                    "loss": loss_value,
                    "lr": lr,
                    "grad_norm": None if result.grad_norm is None else float(local(result.grad_norm)),
                    "tokens_per_s": window_tokens / span,
                    "bytes_per_s": window_bytes / span,
                    "elapsed_s": elapsed_before + now - t0,
                }
                log(monitor.enrich(row))
                if "peak_source" in row and progress:
                    bar.write(
                        f"  matmul peak now {row['peak_flops_per_s'] / 1e9:,.0f} GFLOP/s ({row['peak_source']})",
                        file=sys.stderr,
                    )
                bar.set_postfix(loss=f"{loss_value:.3f}", **monitor.postfix(row), refresh=False)
                window_bytes = window_tokens = 0
                window_t0 = now
            pause_t0 = time.perf_counter()
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < total:
                val = evaluate()
                log({"step": step, **val})
                bar.set_postfix(loss=f"{loss_value:.3f}", **_headline(val), refresh=False)
            if cfg.train.save_every and step % cfg.train.save_every == 0 and step < total:
                checkpoint = save(step, elapsed_before + time.perf_counter() - t0)
            window_t0 += time.perf_counter() - pause_t0  # evaluating and saving are not training throughput
    bar.close()
    if kd_cache is not None and progress:
        print(f"  {kd_cache.describe()}", file=sys.stderr)
    interrupted = step < total
    if not interrupted:
        val = evaluate()
        log({"step": step, **val})
    monitor.close()
    elapsed = elapsed_before + time.perf_counter() - t0
    if checkpoint is None or ckpt_io.checkpoint_name(step) != checkpoint.name:
        checkpoint = save(step, elapsed)
    return TrainResult(
        run_dir=run_dir,
        step=step,
        checkpoint=checkpoint,
        val=val,
        interrupted=interrupted,
        elapsed_s=elapsed,
        cache_dir=cfg.data.cache_dir,
    )


def _saved_header(run_dir: Path) -> dict[str, Any]:
    try:
        return dict(ckpt_io.read_json(run_dir / RUN_CONFIG, what="run config").get("header") or {})
    except UserError:
        return {}


def _headline(val: dict[str, float]) -> dict[str, str]:
    return {k: f"{v:.3f}" for k, v in val.items() if k in ("val_bpb", "val_loss")}


def _announce(cfg: RunConfig, runtime: Runtime, n_params: int, meta: dict, run_dir: Path, start_step: int) -> None:
    train_meta = meta.get("train", {})
    what = f"resuming at step {start_step}" if start_step else "new run"
    arch = "".join(f", {k}={v}" for k, v in cfg.arch.items())
    print(
        f"stlm train: {what} -> {run_dir}\n"
        f"  model {cfg.model}{arch} ({n_params:,} params) on {runtime.describe()}\n"
        f"  data {cfg.data.source}: {train_meta.get('tokens', '?'):,} train tokens, seq_len {cfg.data.seq_len}, "
        f"batch {cfg.train.batch_size} x {cfg.train.grad_accum} accum, {cfg.train.steps} steps",
        file=sys.stderr,
        flush=True,
    )
