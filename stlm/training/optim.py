"""Optimizers (weight decay on matrices only) and learning-rate schedules.

- `adamw`: torch's AdamW (fused kernel where available).
- `adafactor`: torch's Adafactor, the T5 recipe: factored second moments and a
  relative step min(lr, 1/sqrt(t)) scaled by each weight's RMS; use it with a
  constant schedule and lr 0.01.
- `adamw-rms`: AdamW whose update is scaled by the RMS of the weight it
  updates (the nanoT5 recipe for T5 pretraining, lr ~2e-2).

The schedule is a pure function of (step, total steps, config), so a resumed
run gets exactly the learning rate an uninterrupted one would. The warmup
length is fixed when a run starts (`resolve_warmup`: `optim.warmup_fraction`
of the steps unless `optim.warmup_steps` is given) and stored with the run.
Extending a run on resume (a larger `train.steps`) keeps that warmup and
recomputes the rest over the new total from the resumed step on: a cosine or
wsd run that had begun to decay steps back up to the longer schedule's rate at
that step and decays to the floor at the new end; constant and inverse-sqrt
schedules do not depend on the total and continue as if planned that long.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from stlm.config import OptimConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.name`; matrices (ndim >= 2, embeddings included) decay, vectors do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.name == "adafactor":
        return torch.optim.Adafactor(groups, lr=cfg.lr)
    if cfg.name == "adamw-rms":
        return AdamWScale(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    # The fused kernel is one launch per step on CUDA and a vectorised loop on
    # CPU; both are faster than the per-tensor default.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused)


class AdamWScale(torch.optim.Optimizer):
    """Adam with decoupled weight decay whose step is scaled by the weight's RMS.

    update = lr * max(1e-3, RMS(w)) * m_hat / (sqrt(v_hat) + eps)

    Scaling by the weight's own size (as Adafactor does) lets one learning rate
    suit T5's differently initialised matrices; decay is lr * weight_decay * w.
    """

    def __init__(
        self,
        params,
        lr: float = 2e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(p.grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (exp_avg_sq / (1 - beta2**t)).sqrt_().add_(group["eps"])
                rms = p.float().pow(2).mean().sqrt().clamp_(min=1e-3)
                step_size = group["lr"] * rms / (1 - beta1**t)
                p.addcdiv_(exp_avg * step_size.to(p.dtype), denom, value=-1.0)
                if group["weight_decay"]:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss


def warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    """The warmup length of a run of `total_steps`: `warmup_steps`, else `warmup_fraction` of the run."""
    return cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_fraction * total_steps)


def resolve_warmup(cfg: OptimConfig, total_steps: int) -> OptimConfig:
    """`cfg` with the warmup length written out, as a new run stores it (so extending the run keeps it)."""
    return dataclasses.replace(cfg, warmup_steps=warmup_steps(cfg, total_steps))


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`."""
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    warmup = min(warmup_steps(cfg, total_steps), total_steps - 1) if total_steps > 1 else 0
    if step < warmup:
        return peak * (step + 1) / warmup
    if cfg.schedule == "constant":
        return peak
    if cfg.schedule == "inverse-sqrt":
        # T5: constant through warmup, then peak * sqrt(warmup / step).
        return peak * math.sqrt(max(1, warmup) / max(step + 1, warmup, 1))
    if cfg.schedule == "cosine":
        span = max(1, total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    # wsd: hold the peak, then decay linearly to the floor over the last fraction.
    decay_steps = max(1, round(total_steps * cfg.decay_fraction))
    decay_start = max(warmup, total_steps - decay_steps)
    if step < decay_start:
        return peak
    progress = min(1.0, (step - decay_start + 1) / max(1, total_steps - decay_start))
    return peak + (floor - peak) * progress


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
