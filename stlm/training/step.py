"""One training step, and the hooks around it, shared by pretraining, span corruption and fine-tuning.

    setup(model, optim, par, ...)          -> Trainer: the runtime applied to the model (activation
                                              checkpointing, then compile), DDP/FSDP around it,
                                              the optimizer on the wrapped parameters
    trainer.restore(checkpoint)            optimizer, RNG and fp16 scaler state; returns state.json
    train_step(trainer, objective, micro_batches, step=, lr=)
        each micro-batch: to the device, autocast forward, loss / n, (fp16-scaled) backward;
                          gradients are reduced across ranks on the last micro-batch only
        then:             unscale, clip, one agreement across ranks on (all finite, stop),
                          optimizer step or skip, zero_grad
    trainer.evaluate(score)                score(model) on the plain, uncompiled model in eval mode
    trainer.save(step, record=, state=)    a resumable checkpoint (the scaler's state included)

The objective is anything with `loss(model, *tensors)` and `counts(tensors)`
(`stlm.objectives.base.Objective`): next-token and span-corruption windows,
fine-tuning's text-to-text pairs. The caller decides what a step's
micro-batches are and when to log, evaluate and save.

Non-finite policy (`train.nonfinite_skips`): a step whose loss or gradient
norm is NaN/inf on any rank is skipped on every rank (no update; under fp16
the scaler lowers its scale), logged, and training goes on; more than
`nonfinite_skips` such steps in a row stop the run with a UserError, without
saving. Under fp16 the scaler alone judges the gradients (it skips their
update itself), so the policy then watches the loss alone.

The weights themselves are checked where it costs nothing in a healthy run:
before every save, and when the policy stops a run. An update that made a
weight NaN/inf shows as a NaN loss on every later step, so the policy skips
those and stops; a save in between is refused with a UserError: a NaN
checkpoint is never written. (One fused norm over the parameters: about 1 ms
for decoder-tiny on one CPU thread against a 55 ms step, once per save.)
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from stlm.config import OptimConfig
from stlm.errors import UserError
from stlm.objectives.base import Objective
from stlm.runtime import Runtime
from stlm.training.distributed import Parallel
from stlm.training.optim import build_optimizer, set_lr

T = TypeVar("T")


@dataclass
class StepResult:
    loss: torch.Tensor  # () mean micro-batch loss, on the device (reading it is a host sync)
    grad_norm: torch.Tensor | None  # () global norm before clipping; None when clipping is off
    tokens: int  # what the micro-batches trained on (objective.counts), for throughput
    bytes: int
    applied: bool  # the optimizer stepped; False: skipped by the non-finite policy
    stop: bool  # some rank was asked to stop: every rank stops after this step


@dataclass
class Trainer:
    """What every step needs, set up once by `setup`."""

    model: nn.Module  # prepared by the runtime and wrapped for DDP/FSDP: what trains
    optimizer: torch.optim.Optimizer
    par: Parallel
    run_dir: Path  # where checkpoints go (and what the non-finite error points to)
    grad_clip: float  # max global gradient norm; 0: no clipping
    nonfinite_skips: int
    report: Callable[[dict[str, Any]], None]  # the loop's log (metrics file, monitor)
    progress: bool  # also say skipped steps on stderr
    skipped: int = field(default=0, init=False)  # non-finite steps in a row

    @property
    def runtime(self) -> Runtime:
        return self.par.runtime

    def restore(self, ckpt: Path) -> dict[str, Any]:
        """Optimizer, RNG and fp16 scaler state of a checkpoint; returns its state.json."""
        state = self.par.load_trainer_state(ckpt, self.model, self.optimizer)
        if self.runtime.scaler is not None and "scaler" in state:
            self.runtime.scaler.load_state_dict(state["scaler"])
        return state

    def evaluate(self, score: Callable[[nn.Module], T]) -> T:
        """`score(model)` on the model as evaluation sees it: without DDP's gradient hooks,
        uncompiled (`Runtime.eager`), in eval mode; train mode is restored afterwards."""
        model = self.par.plain(self.model)
        was_training = model.training
        model.eval()
        try:
            with self.runtime.eager():
                return score(model)
        finally:
            model.train(was_training)

    def weights_finite(self) -> bool:
        """Every parameter on every rank is finite (a collective under torchrun: call it on all ranks)."""
        params = [p.detach() for group in self.optimizer.param_groups for p in group["params"]]
        params = [p.to_local() if hasattr(p, "to_local") else p for p in params]  # FSDP: this rank's shard
        norms = torch._foreach_norm(params) if params else [torch.zeros((), device=self.runtime.device)]
        finite, _ = self.par.agree(torch.stack([n.to(self.runtime.device) for n in norms]).isfinite().all(), False)
        return finite

    def check_weights(self, step: int) -> None:
        """A UserError when an update made the weights NaN/inf: nothing after it may be saved."""
        if not self.weights_finite():
            raise UserError(
                f"the weights became NaN/inf by step {step} (an update too large: lower optim.lr or raise "
                f"optim.warmup_steps); training stopped without saving. Resume from the last checkpoint in "
                f"{self.run_dir}, if any, with other settings, or train again"
            )

    def save(self, step: int, *, record: Any, state: dict[str, Any], keep: int) -> Path:
        """A resumable checkpoint in `run_dir`: weights, optimizer, RNG, `state` and the scaler's state.

        Refused (UserError) when a weight is NaN/inf: a non-finite checkpoint is never written."""
        self.check_weights(step)
        if self.runtime.scaler is not None:
            state = {**state, "scaler": self.runtime.scaler.state_dict()}
        return self.par.save_checkpoint(
            self.run_dir, step, model=self.model, optimizer=self.optimizer, config=record, state=state, keep=keep
        )


def setup(
    model: nn.Module,
    optim: OptimConfig,
    par: Parallel,
    *,
    run_dir: Path,
    nonfinite_skips: int,
    report: Callable[[dict[str, Any]], None],
    progress: bool,
) -> Trainer:
    """A `Trainer` for `model` (weights already loaded): runtime options, parallelism, optimizer.

    Activation checkpointing and compile act on the plain model (in place, so
    parameter names and checkpoints are unchanged); DDP/FSDP wrap it after, and
    the optimizer must see the wrapped (FSDP: sharded) parameters.
    """
    runtime = par.runtime
    model = par.wrap(runtime.prepare_model(model.to(runtime.device)))
    optimizer = build_optimizer(model, optim, runtime.device)
    return Trainer(
        model=model,
        optimizer=optimizer,
        par=par,
        run_dir=Path(run_dir),
        grad_clip=optim.grad_clip,
        nonfinite_skips=nonfinite_skips,
        report=report,
        progress=progress,
    )


def train_step(
    trainer: Trainer,
    objective: Objective,
    micro_batches: Sequence[tuple[torch.Tensor, ...]],
    *,
    step: int,
    lr: float,
    stop: bool = False,
) -> StepResult:
    """One optimizer step (0-based `step`) at learning rate `lr` over the micro-batches (CPU tensors).

    `stop`: this process was asked to stop; the answer says whether any rank was.
    """
    model, optimizer, par, runtime = trainer.model, trainer.optimizer, trainer.par, trainer.runtime
    set_lr(optimizer, lr)
    n = len(micro_batches)
    loss_sum = torch.zeros((), device=runtime.device)
    tokens = n_bytes = 0
    for i, tensors in enumerate(micro_batches):
        counted_tokens, counted_bytes = objective.counts(tensors)
        tokens, n_bytes = tokens + counted_tokens, n_bytes + counted_bytes
        tensors = tuple(t.to(runtime.device, non_blocking=True) for t in tensors)
        with par.grad_sync(model, i == n - 1):
            with runtime.autocast():
                loss = objective.loss(model, *tensors)
            runtime.backward(loss / n)
        loss_sum += loss.detach()
    runtime.unscale(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.grad_clip) if trainer.grad_clip > 0 else None
    grad_ok = torch.isfinite(local(grad_norm)) if grad_norm is not None and runtime.scaler is None else True
    finite, stop_any = par.agree(torch.isfinite(loss_sum) & grad_ok, stop)  # the one host sync per step
    if finite:
        runtime.step(optimizer)
        trainer.skipped = 0
    else:
        runtime.skip(optimizer)
        trainer.skipped += 1
        _nonfinite(trainer, step + 1)
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_sum / n, grad_norm, tokens, n_bytes, applied=finite, stop=stop_any)


def _nonfinite(trainer: Trainer, step: int) -> None:
    """The non-finite policy after a skipped step: log it, or stop past `nonfinite_skips` in a row."""
    skipped, limit = trainer.skipped, trainer.nonfinite_skips
    if skipped > limit:
        weights = "" if trainer.weights_finite() else "; the weights themselves are NaN/inf (an update too large)"
        raise UserError(
            f"the loss or gradient was NaN/inf for {skipped} steps in a row (up to step {step}, "
            f"train.nonfinite_skips = {limit}){weights}; training stopped without saving. Train again with a lower "
            f"optim.lr or longer optim.warmup_steps, or resume from the last checkpoint in {trainer.run_dir}"
        )
    trainer.report({"step": step, "skipped": "non-finite loss or gradient", "consecutive": skipped})
    if trainer.progress:
        print(
            f"  step {step}: non-finite loss or gradient, update skipped ({skipped}/{limit} in a row)", file=sys.stderr
        )


def local(t: torch.Tensor) -> torch.Tensor:
    """A replicated DTensor (FSDP's gradient norm) as a plain tensor."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


# --- around the steps: the progress bar and the stop signal both loops use -------------------


def progress_bar(desc: str, total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    # In a log file (CI, nohup) a redraw is a new line: redraw rarely there.
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=interval,
    )


class StopSignal:
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

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
