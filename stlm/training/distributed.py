"""Data-parallel (DDP) and sharded (FSDP2) training under torchrun.

    torchrun --nproc-per-node N -m stlm train --parallel ddp|fsdp ...

Each of the N processes runs the same training loop and the same step
(`training/step.py`); this module is the only place that knows there are several. The model code stays single-device.

- `train.batch_size` is the GLOBAL micro-batch: each rank draws
  batch_size / N windows, and the N ranks together draw exactly the windows one
  process would (see `WindowLoader`), so a run gives the same result on any
  number of processes up to floating-point reduction order. (Span corruption
  draws its masks per rank, so T5 runs agree in distribution, not bitwise.)
- Gradient accumulation syncs gradients on the last micro-batch only (DDP
  `no_sync`, FSDP `set_requires_gradient_sync(False)` before it).
- One small all-reduce per step agrees on "the loss was finite" and "a stop
  signal arrived", so every rank skips, stops and saves at the same step.
- Logged loss and validation metrics are averaged over ranks; validation
  scores an equal slice of the validation tokens on each rank.
- FSDP: every layer of a decoder is its own unit (gathered only for its
  forward); an encoder-decoder is one unit. Parameters, gradients and optimizer
  state are sharded either way.
- Checkpoints are consolidated: rank 0 writes one `model.safetensors` (FSDP
  gathers the full weights) and the full optimizer state in the single-process
  layout, so a checkpoint resumes on any number of processes and loads for
  single-process evaluate/generate. Every rank reads the checkpoint on resume
  (one machine, or a shared filesystem).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from stlm import checkpoint as ckpt_io
from stlm.errors import UserError
from stlm.runtime import Runtime

MODES = ("auto", "none", "ddp", "fsdp")
_WEIGHTS = {"val_bpb": "val_bytes", "val_loss": "val_tokens"}  # metric -> the count it averages over


@dataclass
class Parallel:
    mode: str  # resolved: none | ddp | fsdp
    rank: int
    world_size: int
    runtime: Runtime
    owns_group: bool = False  # this session created the process group (and destroys it)
    _template: torch.nn.Module | None = field(default=None, repr=False)  # FSDP, rank 0: unsharded copy for saving

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.mode != "none"

    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            raise UserError(
                f"train.batch_size {global_batch} is the global batch and must divide evenly over "
                f"{self.world_size} processes; use a multiple of {self.world_size}"
            )
        return global_batch // self.world_size

    # --- model -----------------------------------------------------------------------------------

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to train: the model itself, DDP around it, or the model sharded in place."""
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.runtime.device.index] if self.runtime.device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=ids)
        if self.mode == "fsdp":
            from torch.distributed.fsdp import fully_shard

            if self.is_main:
                self._template = copy.deepcopy(model).cpu()
            # Encoder-decoders project every decoder layer's cross-attention memory before running
            # the layers, outside their forward; there the whole model is one FSDP unit.
            blocks = [] if hasattr(model, "encode") and hasattr(model, "decode") else _shardable_blocks(model)
            for block in blocks:
                fully_shard(block)
            fully_shard(model)
        return model

    def plain(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to evaluate: DDP's inner module (no gradient hooks), else the model."""
        return model.module if self.mode == "ddp" else model

    def grad_sync(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Around one micro-batch's forward and backward: reduce gradients only when `sync`."""
        if self.mode == "ddp" and not sync:
            return model.no_sync()
        if self.mode == "fsdp":
            model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()

    # --- agreement and reductions ----------------------------------------------------------------

    def agree(self, finite: torch.Tensor, stop: bool) -> tuple[bool, bool]:
        """(every rank's step was finite, some rank was asked to stop): one host sync per step."""
        if not self.distributed:
            return bool(finite), stop
        flags = torch.stack([~finite, torch.tensor(stop, device=finite.device)]).to(torch.float32)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        bad, stop_any = flags.tolist()
        return not bad, bool(stop_any)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            value = value.detach().clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.world_size
        return value

    def validate(
        self,
        task: Any,
        model: torch.nn.Module,
        val: np.ndarray,
        *,
        max_tokens: int | None,
        batch_size: int,
        device: torch.device,
        autocast: Any,
    ) -> dict[str, float]:
        """Validation metrics of `task` (an objective) for the plain model (`Trainer.evaluate` gives it);
        each rank scores an equal slice and the results are pooled."""
        if not self.distributed:
            return task.validate(
                model, val, max_tokens=max_tokens, batch_size=batch_size, device=device, autocast=autocast
            )
        # Equal slices give every rank the same number of forward passes (FSDP needs all ranks in each).
        n = min(max_tokens or len(val) - 1, len(val) - 1)
        per = n // self.world_size
        piece = val[self.rank * per : (self.rank + 1) * per + 1]
        local = task.validate(model, piece, max_tokens=None, batch_size=batch_size, device=device, autocast=autocast)
        pooled: dict[str, float] = {}
        for metric, count in _WEIGHTS.items():
            if metric in local:
                sums = torch.tensor([local[metric] * local[count], float(local[count])], dtype=torch.float64)
                dist.all_reduce(sums, op=dist.ReduceOp.SUM)  # gloo and nccl both take float64 on CPU/GPU
                pooled[metric], pooled[count] = float(sums[0] / sums[1]), int(sums[1])
        return pooled

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. writes a cache), then the others (which read it)."""
        if self.is_main:
            yield
        self.barrier()
        if not self.is_main:
            yield

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    # --- checkpoints ----------------------------------------------------------------------------

    def save_checkpoint(
        self,
        run_dir: Path,
        step: int,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        config: Any,
        state: dict[str, Any],
        keep: int,
    ) -> Path:
        """One consolidated checkpoint, written by rank 0; every rank learns whether it succeeded."""
        if not self.distributed:
            return ckpt_io.save_checkpoint(
                run_dir, step, model=model, optimizer=optimizer, config=config, state=state, keep=keep
            )
        weights, optim_state = self.plain(model), None
        if self.mode == "fsdp":  # collectives: every rank takes part, rank 0 receives the full tensors
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            full = StateDictOptions(full_state_dict=True, cpu_offload=True)
            model_state = get_model_state_dict(model, options=full)
            optim_state = get_optimizer_state_dict(model, optimizer, options=full)
            if self.is_main:
                self._template.load_state_dict(model_state)
                weights, optim_state = self._template, _positional(optim_state)
        error: BaseException | None = None
        path = Path(run_dir) / ckpt_io.CHECKPOINTS_DIR / ckpt_io.checkpoint_name(step)
        if self.is_main:
            try:
                path = ckpt_io.save_checkpoint(
                    run_dir,
                    step,
                    model=weights,
                    optimizer=optimizer if optim_state is None else None,
                    optimizer_state=optim_state,
                    config=config,
                    state=state,
                    keep=keep,
                )
            except Exception as exc:  # e.g. a full disk: tell the other ranks before raising
                error = exc
        ok = torch.tensor([0.0 if error else 1.0], device=self._comm_device())
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if error is not None:
            raise error
        if not bool(ok.item()):
            raise UserError(f"rank 0 failed to write checkpoint {path}; see its error above")
        return path

    def load_trainer_state(
        self, ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        """Restore optimizer and RNG state on every rank; returns the checkpoint's state.json."""
        if self.mode != "fsdp":
            return ckpt_io.load_trainer_state(ckpt, optimizer)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        saved = ckpt_io.read_optimizer_state(ckpt)
        names = {id(p): name for name, p in model.named_parameters()}
        order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
        by_name = {
            "state": {order[int(i)]: s for i, s in saved["state"].items()},
            "param_groups": [{**g, "params": [order[int(i)] for i in g["params"]]} for g in saved["param_groups"]],
        }
        set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))
        return ckpt_io.load_trainer_state(ckpt, None)

    def _comm_device(self) -> torch.device:
        return self.runtime.device if dist.get_backend() == "nccl" else torch.device("cpu")


@contextlib.contextmanager
def session(mode: str, runtime: Runtime) -> Iterator[Parallel]:
    """Join the torchrun process group (if launched by torchrun) for the length of a run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    if world <= 1:
        yield Parallel(mode="none", rank=0, world_size=1, runtime=runtime)
        return
    if mode == "none":
        raise UserError(
            f"launched as {world} processes but runtime.parallel is 'none'; use --parallel ddp or fsdp, "
            "or start one process without torchrun"
        )
    mode = "ddp" if mode == "auto" else mode
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if runtime.device.type == "cuda":
        torch.cuda.set_device(local_rank)
        runtime = dataclasses.replace(runtime, device=torch.device("cuda", local_rank))
    elif runtime.device.type != "cpu":
        raise UserError(
            f"distributed training runs on cuda or cpu, not {runtime.device.type}; pass --device cuda or cpu"
        )
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if runtime.device.type == "cuda" else "gloo")
    try:
        yield Parallel(mode=mode, rank=rank, world_size=world, runtime=runtime, owns_group=owns)
    finally:
        if owns:
            dist.destroy_process_group()


def _shardable_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Elements of the model's ModuleLists (its layers) that own their parameters outright.

    A layer that shares a parameter with anything outside it (tied or repeated
    weights) stays in the root's shard group, which FSDP requires.
    """
    users: dict[int, set[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        users.setdefault(id(p), set()).add(name)
    chosen: list[tuple[str, torch.nn.Module]] = []
    for prefix, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList):
            continue
        for i, block in enumerate(module):
            path = f"{prefix}.{i}." if prefix else f"{i}."
            if any(path.startswith(outer) for outer, _ in chosen):
                continue
            owned = all(all(name.startswith(path) for name in users[id(p)]) for p in block.parameters())
            if owned and any(True for _ in block.parameters()):
                chosen.append((path, block))
    return [block for _, block in chosen]


def _positional(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by parameter name -> the single-process layout (ids 0..n-1)."""
    names = [name for group in state["param_groups"] for name in group["params"]]
    index = {name: i for i, name in enumerate(names)}
    return {
        "state": {index[name]: s for name, s in state["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]],
    }
