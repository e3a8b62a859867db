"""The one training loop: from a resolved run config to checkpoints and metrics.

    RunConfig -> registry (model config) -> model -> runtime (device, precision)
              -> data (cached token shards, seeded window loader)
              -> AdamW + schedule -> steps -> validation BPB, checkpoints, metrics

Resuming restores weights, optimizer, RNG and the loader's position, and the
schedule is a function of the step alone, so N steps straight and N/2 + resume
+ N/2 end with the same weights.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stlm import registry
from stlm.config import RunConfig
from stlm.data import WindowLoader, prepare_data
from stlm.errors import UserError
from stlm.families import ModelFamily
from stlm import checkpoint as ckpt_io
from stlm.training import distributed
from stlm.training.logging import MetricsLog, format_header
from stlm.training.monitor import RunMonitor, device_peak, step_flops_per_token
from stlm.training.optim import build_optimizer, lr_at, set_lr
from stlm.training.report import write_run_report
from stlm.runtime import Runtime, resolve_runtime, run_header, seed_everything
from stlm.training.tasks import build_task

RUN_CONFIG = "config.json"
METRICS = "metrics.jsonl"


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path
    val: dict[str, float] | None  # the last validation metrics (val_bpb or val_loss, ...)
    interrupted: bool
    elapsed_s: float


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    stop_at: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Start a new run in `run_dir` (which must not hold checkpoints yet)."""
    run_dir = Path(run_dir)
    check_new_run_dir(run_dir)
    family, model_cfg = registry.resolve_model(cfg.model)
    return _run(cfg, family, model_cfg, run_dir, resume_from=None, stop_at=stop_at, progress=progress)


def check_new_run_dir(run_dir: Path) -> None:
    """A UserError if `run_dir` already holds a run (a config or any checkpoint)."""
    if ckpt_io.list_checkpoints(run_dir) or (run_dir / RUN_CONFIG).exists():
        raise UserError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose another --out")


def resume(run_dir: str | Path, *, stop_at: int | None = None, progress: bool = True) -> TrainResult:
    """Continue the run in `run_dir` from its newest complete checkpoint."""
    run_dir = Path(run_dir)
    latest = ckpt_io.latest_checkpoint(run_dir)
    if latest is None and (run_dir / RUN_CONFIG).is_file():  # killed before its first checkpoint: start over
        source = run_dir / RUN_CONFIG
        resolved = ckpt_io.read_json(source, what="run config")
    elif latest is None:
        raise UserError(f"{run_dir} holds no complete checkpoint to resume from")
    else:
        ckpt_io.verify_checkpoint(latest)
        source = latest / "config.json"
        resolved = ckpt_io.load_config(latest)
    cfg = RunConfig.from_dict(resolved.get("run", {}), source=str(source))
    record = ckpt_io.RunRecord.from_dict(resolved)
    family, model_cfg = record.family, record.model_config
    # The recorded tokenizer, not the spec: a BPE tokenizer.json may have moved since.
    tokenizer = family.check_tokenizer(record.load_tokenizer(), cfg.data.tokenizer, model_cfg)
    return _run(cfg, family, model_cfg, run_dir, resume_from=latest, stop_at=stop_at, progress=progress, tokenizer=tokenizer)


def _run(cfg: RunConfig, family: ModelFamily, model_cfg: Any, run_dir: Path, **options: Any) -> TrainResult:
    """One process's share of a run: alone, or inside torchrun's process group."""
    with distributed.session(cfg.runtime.parallel, resolve_runtime(cfg.runtime)) as par:
        options["progress"] = options["progress"] and par.is_main
        result = _run_on(par, cfg, family, model_cfg, run_dir, **options)
        is_main = par.is_main
    if is_main:  # after the process group is gone: no rank waits on the report
        _write_report(result, options["stop_at"], options["progress"])
    return result


def _write_report(result: TrainResult, stop_at: int | None, progress: bool) -> None:
    """report.md and loss.png in the run folder; the run (already saved) survives a failure to write them."""
    stopped = None
    if result.interrupted:
        stopped = f"as --stop-at {stop_at} asked" if stop_at is not None and result.step >= stop_at else "interrupted by a signal"
    try:
        path = write_run_report(result, stopped=stopped)
    except (OSError, UserError) as exc:
        print(f"  report.md not written: {exc}", file=sys.stderr)
        return
    if progress:
        print(f"  report {path}", file=sys.stderr)


def _run_on(
    par: distributed.Parallel,
    cfg: RunConfig,
    family: ModelFamily,
    model_cfg: Any,
    run_dir: Path,
    *,
    resume_from: Path | None,
    stop_at: int | None,
    progress: bool,
    tokenizer: Any = None,
) -> TrainResult:
    runtime = par.runtime
    seed_everything(cfg.train.seed)
    if tokenizer is None:
        tokenizer = family.resolve_tokenizer(cfg.data.tokenizer, model_cfg)
    task = build_task(cfg, tokenizer, family)
    max_len = family.max_len(model_cfg)  # None: relative positions have no length limit; rotary tables do
    if max_len is not None and cfg.data.seq_len > max_len:
        raise UserError(f"data.seq_len {cfg.data.seq_len} exceeds the model's max_seq_len {max_len}")

    with par.main_first():  # rank 0 fills the token cache, the others read it
        data = prepare_data(
            cfg.data.source,
            tokenizer,
            cache_dir=cfg.data.cache_dir,  # None: the user cache directory
            val_fraction=cfg.data.val_fraction,
            seed=cfg.data.split_seed,
            text_field=cfg.data.text_field,
            progress=progress,
            workers=cfg.data.workers,
            streaming=cfg.data.streaming,
            max_documents=cfg.data.max_documents,
        )
    model = runtime.prepare_model(family.build(model_cfg).to(runtime.device))
    loader = WindowLoader(
        data.train, task.window_len - 1, par.local_batch(cfg.train.batch_size), cfg.train.seed,
        rank=par.rank, world_size=par.world_size,
    )

    resolved = ckpt_io.RunRecord(
        family, model_cfg, tokenizer.to_dict(),
        {"run": cfg.to_dict(), "data": {k: data.meta.get(k) for k in ("fingerprint", "train", "val") if k in data.meta}},
    )
    start_step, elapsed_before = 0, 0.0
    if resume_from is None:
        note = family.before_training(model, data.train)
        if note and progress:
            print(f"  {note}", file=sys.stderr)
    if resume_from is not None:
        ckpt_io.load_weights(model, resume_from)
    # Speed accounting: matmul FLOPs per token (counted once) against this device's matmul peak
    # (measured once per run, kept in config.json's header and reused on resume).
    header = _saved_header(run_dir) if resume_from is not None else run_header(runtime.describe())
    peak = device_peak(runtime.device, runtime.precision, header.get("matmul_peak"))
    header["matmul_peak"] = {"device": str(runtime.device), "precision": runtime.precision, "flops_per_s": peak}
    flops_per_token = step_flops_per_token(
        model, task, torch.zeros(cfg.train.batch_size, task.window_len, dtype=torch.long), runtime,
        build_meta=lambda: family.build(model_cfg),
    )  # before wrapping: a counting pass must not run collectives
    model = par.wrap(model)  # DDP / FSDP under torchrun; the optimizer must see the wrapped parameters
    optimizer = build_optimizer(model, cfg.optim, runtime.device)
    if resume_from is not None:
        state = par.load_trainer_state(resume_from, model, optimizer)
        loader.load_state_dict(state["loader"])
        start_step, elapsed_before = int(state["step"]), float(state.get("elapsed_s", 0.0))
        if runtime.scaler is not None and "scaler" in state:
            runtime.scaler.load_state_dict(state["scaler"])
    if resume_from is None and par.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        header["allocator"] = runtime.allocator
        ckpt_io.write_json_atomic(run_dir / RUN_CONFIG, {**resolved.to_dict(), "header": header})

    metrics = MetricsLog(run_dir / METRICS, resume_step=start_step if resume_from else None) if par.is_main else None

    def log(record: dict[str, Any]) -> None:
        if metrics is not None:  # rank 0 writes for all
            metrics.write(record)
            monitor.write(record)

    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    if progress:
        _announce(cfg, runtime, n_params, data.meta, run_dir, start_step)
        print(format_header(header, flops_per_token), file=sys.stderr, flush=True)
    monitor = RunMonitor(
        device=runtime.device, flops_per_token=flops_per_token, peak_flops=peak, total_steps=cfg.train.steps,
        start_step=start_step,
        tensorboard_dir=run_dir / "tensorboard" if cfg.train.tensorboard and par.is_main else None,
    )

    def evaluate(n_tokens: int | None) -> dict[str, float]:
        return par.validate(
            task, model, data.val, max_tokens=n_tokens, batch_size=cfg.train.batch_size,
            device=runtime.device, autocast=runtime.autocast(),
        )

    def save(step: int, elapsed: float) -> Path:
        state = {"loader": loader.state_dict(), "elapsed_s": elapsed}
        if runtime.scaler is not None:
            state["scaler"] = runtime.scaler.state_dict()
        return par.save_checkpoint(
            run_dir, step, model=model, optimizer=optimizer, config=resolved, state=state, keep=cfg.train.keep_checkpoints
        )

    total = cfg.train.steps
    step = start_step
    val: dict[str, float] | None = None
    checkpoint = resume_from
    t0 = time.perf_counter()
    bar = _progress_bar(total, start_step, progress)
    stop = _StopSignal()
    window_bytes = window_tokens = 0
    window_t0 = time.perf_counter()
    loss_value = float("nan")
    stop_now, skipped = False, 0  # stop agreed by all ranks; consecutive non-finite steps skipped
    model.train()
    with stop:
        while step < total:
            if stop_now or (stop.requested and not par.distributed) or (stop_at is not None and step >= stop_at):
                break
            lr = lr_at(step, total, cfg.optim)
            set_lr(optimizer, lr)
            loss_sum = torch.zeros((), device=runtime.device)
            for micro in range(cfg.train.grad_accum):
                window = loader.next_batch()  # (B / world_size, window_len) on CPU
                key = (cfg.train.seed, step, micro) + ((par.rank,) if par.distributed else ())
                tensors = task.batch(window, key)
                n_tokens, n_bytes = task.counts(tensors)
                window_tokens += n_tokens
                window_bytes += n_bytes
                tensors = tuple(t.to(runtime.device, non_blocking=True) for t in tensors)
                with par.grad_sync(model, micro == cfg.train.grad_accum - 1):
                    with runtime.autocast():
                        loss = task.loss(model, *tensors)
                    runtime.backward(loss / cfg.train.grad_accum)
                loss_sum += loss.detach()
            runtime.unscale(optimizer)
            grad_norm = (
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                if cfg.optim.grad_clip > 0
                else None
            )
            # Under fp16 the gradient scaler owns inf/NaN gradients (it skips the step and lowers
            # its scale); the non-finite policy then watches the loss alone.
            grad_ok = torch.isfinite(_local(grad_norm)) if grad_norm is not None and runtime.scaler is None else True
            finite, stop_now = par.agree(torch.isfinite(loss_sum) & grad_ok, stop.requested)  # the one host sync per step
            if finite:
                runtime.step(optimizer)
                skipped = 0
            else:
                skipped += 1
                _nonfinite(step + 1, skipped, cfg.train.nonfinite_skips, run_dir, log, progress)
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)

            if step % cfg.train.log_every == 0 or step == total:
                # The only host sync of the hot loop, once per log interval.
                loss_value = float(par.mean(loss_sum)) / cfg.train.grad_accum
                now = time.perf_counter()
                span = max(now - window_t0, 1e-9)
                record = {
                    "step": step,
                    "loss": loss_value,
                    "lr": lr,
                    "grad_norm": None if grad_norm is None else float(_local(grad_norm)),
                    "tokens_per_s": window_tokens / span,
                    "bytes_per_s": window_bytes / span,
                    "elapsed_s": elapsed_before + now - t0,
                }
                log(monitor.enrich(record))
                bar.set_postfix(loss=f"{loss_value:.3f}", **monitor.postfix(record), refresh=False)
                window_bytes = window_tokens = 0
                window_t0 = now
            pause_t0 = time.perf_counter()
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < total:
                val = evaluate(cfg.train.eval_tokens)
                log({"step": step, **val})
                bar.set_postfix(loss=f"{loss_value:.3f}", **_headline(val), refresh=False)
            if cfg.train.save_every and step % cfg.train.save_every == 0 and step < total:
                checkpoint = save(step, elapsed_before + time.perf_counter() - t0)
            window_t0 += time.perf_counter() - pause_t0  # evaluating and saving are not training throughput
    bar.close()
    interrupted = step < total
    if not interrupted:
        val = evaluate(cfg.train.eval_tokens)
        log({"step": step, **val})
    monitor.close()
    elapsed = elapsed_before + time.perf_counter() - t0
    if checkpoint is None or ckpt_io.checkpoint_name(step) != checkpoint.name:
        checkpoint = save(step, elapsed)
    return TrainResult(run_dir=run_dir, step=step, checkpoint=checkpoint, val=val, interrupted=interrupted, elapsed_s=elapsed)


def _local(t: torch.Tensor) -> torch.Tensor:
    """A replicated DTensor (FSDP's gradient norm) as a plain tensor."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _nonfinite(step: int, skipped: int, limit: int, run_dir: Path, log: Any, progress: bool) -> None:
    """The non-finite loss policy: skip the update up to `limit` steps in a row, then stop."""
    if skipped > limit:
        raise UserError(
            f"the loss or gradient was NaN/inf for {skipped} steps in a row (up to step {step}, "
            f"train.nonfinite_skips = {limit}); training stopped without saving. Train again with a lower "
            f"optim.lr or longer optim.warmup_steps, or resume from the last checkpoint in {run_dir}"
        )
    log({"step": step, "skipped": "non-finite loss or gradient", "consecutive": skipped})
    if progress:
        print(f"  step {step}: non-finite loss or gradient, update skipped ({skipped}/{limit} in a row)", file=sys.stderr)


def _saved_header(run_dir: Path) -> dict[str, Any]:
    import json

    try:
        return dict(json.loads((run_dir / RUN_CONFIG).read_text(encoding="utf-8")).get("header") or {})
    except (OSError, ValueError):
        return {}


def _headline(val: dict[str, float]) -> dict[str, str]:
    return {k: f"{v:.3f}" for k, v in val.items() if k in ("val_bpb", "val_loss")}


def _announce(cfg: RunConfig, runtime: Runtime, n_params: int, meta: dict, run_dir: Path, start_step: int) -> None:
    import sys

    train_meta = meta.get("train", {})
    what = f"resuming at step {start_step}" if start_step else "new run"
    print(
        f"stlm train: {what} -> {run_dir}\n"
        f"  model {cfg.model} ({n_params:,} params) on {runtime.describe()}\n"
        f"  data {cfg.data.source}: {train_meta.get('tokens', '?'):,} train tokens, seq_len {cfg.data.seq_len}, "
        f"batch {cfg.train.batch_size} x {cfg.train.grad_accum} accum, {cfg.train.steps} steps",
        file=sys.stderr,
        flush=True,
    )


def _progress_bar(total: int, initial: int, enabled: bool):
    import sys

    from tqdm.auto import tqdm

    # In a log file (CI, nohup) a redraw is a new line: redraw rarely there.
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(
        total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True, mininterval=interval
    )


class _StopSignal:
    """SIGINT/SIGTERM ask the loop to stop at the next step boundary and save.

    Stopping between steps (never inside optimizer.step) keeps the saved state
    consistent. A second SIGINT interrupts at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
