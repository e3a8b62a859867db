"""SPIN, self-play fine-tuning: a fine-tuned model learns to tell the human answers from its own.

    RUN (a fine-tuned model and its task)
      iteration k = 1..N:
        opponent  = the model as iteration k starts, frozen (a copy: no gradients, eval mode)
        opponent answers the training prompts (and the validation ones) greedily, in batches
        opponent scores gold and generated answers: reference log-probs, cached to
                  opponent/iter-k.json (a resumed iteration reads them back)
        train     `steps` optimizer steps of the shared training step on
                  -log sigmoid(beta * [(log p(y) - log p_ref(y)) - (log p(y') - log p_ref(y'))])
                  (+ nll_weight * the gold answers' NLL per token)
        report    the task metric on validation (the fine-tuning evaluation) and the implicit-reward
                  accuracy on validation: how often the gold answer outscores the opponent's
        checkpoint step k*steps: resumable (weights, optimizer, RNG, the per-iteration history)

A run folder holds config.json, metrics.jsonl, opponent/iter-k.json,
checkpoints/step-N (the newest; `--resume` continues from it, mid-iteration
too), results.json (one row per iteration, iteration 0 being the start).

Resume is exact: the batches of global step s are fixed by (seed, s), the
opponent's answers are greedy and cached, and the optimizer and RNG state
come back from the checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stlm import checkpoint as ckpt_io
from stlm.config import (
    OptimConfig,
    RuntimeConfig,
    SectionedConfig,
    apply_overrides,
    apply_resume_overrides,
    config_from_dict,
)
from stlm.errors import UserError
from stlm.finetune.config import FinetuneConfig, TaskConfig
from stlm.finetune.evaluate import evaluate_examples, generate_predictions
from stlm.finetune.examples import Example
from stlm.finetune.format import TextToText
from stlm.finetune.loop import BEST, TASK_FILES, batch_indices, files_named_again, load_task_data, with_dropout
from stlm.finetune.loop import _sample as sample_examples
from stlm.models.config_dict import is_dropout
from stlm.objectives.preference import implicit_rewards, spin_loss
from stlm.runtime import decoding_runtime, describe_training, resolve_runtime, run_header, seed_everything
from stlm.training import distributed
from stlm.training.logging import MetricsLog
from stlm.training.optim import lr_at, resolve_warmup
from stlm.training.step import StopSignal, progress_bar, setup, train_step

RESULTS = "results.json"
OPPONENT_DIR = "opponent"
# What a resumed SPIN run may change: how often it logs, where it runs.
RESUME_SAFE_KEYS = ("train.log_every", "runtime.device", "runtime.threads")


@dataclass
class SpinTrainConfig:
    iterations: int = 3  # self-play iterations; each one's opponent is the model the previous one left
    steps: int = 200  # optimizer steps per iteration
    batch_size: int = 16  # (gold, generated) pairs per step
    beta: float = 0.1  # the loss's inverse temperature on the implicit-reward margin
    nll_weight: float = 0.0  # weight of an added NLL term on the gold answers (0: the pure SPIN loss)
    prompts: int = 0  # training prompts the opponent answers each iteration; 0: all
    gen_batch_size: int = 64  # prompts the opponent answers at once
    max_new_tokens: int = 0  # opponent answer length; 0: the fine-tuned run's own (longest target + 8)
    eval_examples: int = 100  # validation examples scored after each iteration; 0: all
    log_every: int = 10  # steps between training records in metrics.jsonl
    seed: int = 0  # example order
    nonfinite_skips: int = 3  # consecutive steps with a NaN/inf loss or gradient skipped before the run stops

    def __post_init__(self) -> None:
        for name in ("iterations", "steps", "batch_size", "gen_batch_size", "log_every"):
            _check(getattr(self, name) >= 1, f"train.{name} must be >= 1")
        for name in ("prompts", "max_new_tokens", "eval_examples", "nonfinite_skips"):
            _check(getattr(self, name) >= 0, f"train.{name} must be >= 0")
        _check(self.beta > 0, "train.beta must be positive")
        _check(self.nll_weight >= 0, "train.nll_weight must be >= 0")
        _check(0 <= self.seed < 2**63, "train.seed must be in [0, 2**63)")


def _spin_optim() -> OptimConfig:
    # Preference fine-tuning moves a fine-tuned model a little: a lower, constant rate after a short warmup.
    return OptimConfig(lr=3e-4, warmup_fraction=0.05, weight_decay=0.0, schedule="constant")


@dataclass
class SpinConfig(SectionedConfig):
    init: str = ""  # the fine-tuned run (its best checkpoint) or a checkpoint SPIN starts from
    dropout: float | None = None  # the policy's dropout while it trains; unset: the one the run recorded
    optim: OptimConfig = field(default_factory=_spin_optim)
    train: SpinTrainConfig = field(default_factory=SpinTrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        _check(
            self.dropout is None or is_dropout(self.dropout),
            f"dropout must be a number in [0, 1), got {self.dropout!r}",
        )


@dataclass
class SpinResult:
    out: Path
    step: int
    checkpoint: Path
    results: dict[str, Any]  # what results.json holds (so far, when stopped early)
    finished: bool  # every iteration ran (else: stopped at stop_at; resume it)


# --- the objective the shared training step takes ----------------------------------------------


@dataclass
class SpinObjective:
    """SPIN's loss as an `Objective`: tensors = gold pair tensors, generated pair tensors, ref_gold (B,), ref_generated (B,).

    `n_pair` is how many tensors a family's `pair_tensors` gives (2 causal, 3 encoder-decoder).
    Each call also counts implicit-reward wins on its batch (`wins`, `pairs`) for the report.
    """

    fmt: TextToText
    beta: float
    nll_weight: float
    n_pair: int
    wins: int = 0
    pairs: int = 0

    def split(self, tensors: Sequence[torch.Tensor]):
        n = self.n_pair
        return tensors[:n], tensors[n : 2 * n], tensors[2 * n], tensors[2 * n + 1]

    def loss(self, model: nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        gold, generated, ref_gold, ref_generated = self.split(tensors)
        lp_gold, n_gold = self.fmt.family.pair_logprobs(model, *gold)  # (B,), (B,)
        lp_generated, _ = self.fmt.family.pair_logprobs(model, *generated)  # (B,)
        loss = spin_loss(lp_gold, lp_generated, ref_gold, ref_generated, beta=self.beta).mean()
        r_gold, r_generated = implicit_rewards(lp_gold.detach(), lp_generated.detach(), ref_gold, ref_generated)
        self.wins += int((r_gold > r_generated).sum())
        self.pairs += int(r_gold.numel())
        if self.nll_weight:
            loss = loss + self.nll_weight * (-lp_gold.sum() / n_gold.sum().clamp_min(1))
        return loss

    def counts(self, tensors: tuple[torch.Tensor, ...]) -> tuple[int, int]:
        gold, generated, _, _ = self.split(tensors)
        return self.fmt.n_target_tokens(tuple(gold)) + self.fmt.n_target_tokens(tuple(generated)), 0

    def batch(self, gold: Sequence[Example], generated: Sequence[str], ref_gold, ref_generated) -> tuple:
        """The step's tensors for examples, the opponent's answers to them and the cached reference log-probs."""
        answered = [Example(ex.input, text) for ex, text in zip(gold, generated)]
        return (
            *self.fmt.batch(gold),
            *self.fmt.batch(answered),
            torch.tensor(ref_gold, dtype=torch.float32),  # (B,)
            torch.tensor(ref_generated, dtype=torch.float32),  # (B,)
        )


# --- the frozen opponent -----------------------------------------------------------------------


class Opponent:
    """The model as an iteration starts, frozen: a copy in eval mode whose parameters take no gradients."""

    def __init__(
        self,
        model: nn.Module,
        fmt: TextToText,
        *,
        device: torch.device,
        autocast=contextlib.nullcontext,
        decode_autocast=None,
    ):
        """`autocast()` gives the training runtime's autocast context, entered once per scoring forward
        (the reference log-probs must match the policy's); `decode_autocast()` the one answers are
        generated in (default: `autocast`)."""
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.fmt, self.device, self.autocast = fmt, device, autocast
        self.decode_autocast = decode_autocast or autocast

    @torch.inference_mode()
    def answer(self, examples: Sequence[Example], *, max_new_tokens: int, batch_size: int) -> list[str]:
        """Greedy answers (the batched generation fine-tuning evaluates with)."""
        with self.decode_autocast():
            return generate_predictions(
                self.model, self.fmt, examples, max_new_tokens=max_new_tokens, batch_size=batch_size
            )

    @torch.inference_mode()
    def logprobs(self, examples: Sequence[Example], *, batch_size: int) -> list[float]:
        """log p_ref(target | input) per example, summed over the target's ids (its EOS included), in nats."""
        out: list[float] = []
        for i in range(0, len(examples), batch_size):
            tensors = self.fmt.batch(examples[i : i + batch_size])
            with self.autocast():
                lp, _ = self.fmt.family.pair_logprobs(self.model, *(t.to(self.device) for t in tensors))
            out.extend(float(v) for v in lp.float().cpu())
        return out

    def play(self, examples: Sequence[Example], *, max_new_tokens: int, batch_size: int) -> dict[str, list]:
        """What an iteration trains against: the opponent's answers and the reference log-probs of both."""
        generated = self.answer(examples, max_new_tokens=max_new_tokens, batch_size=batch_size)
        answered = [Example(ex.input, text) for ex, text in zip(examples, generated)]
        return {
            "generated": generated,
            "ref_gold": self.logprobs(examples, batch_size=batch_size),
            "ref_generated": self.logprobs(answered, batch_size=batch_size),
        }


@torch.inference_mode()
def reward_accuracy(
    model: nn.Module,
    objective: SpinObjective,
    examples: Sequence[Example],
    played,
    *,
    batch_size: int,
    device,
    autocast,
) -> dict[str, float]:
    """Implicit-reward accuracy of `model` on examples the opponent `played`: share where r(y) > r(y') strictly;
    also the mean margin r(y) - r(y') and the share of opponent answers equal to the gold one."""
    wins, margin_sum = 0, 0.0
    for i in range(0, len(examples), batch_size):
        j = slice(i, i + batch_size)
        tensors = objective.batch(
            examples[j], played["generated"][j], played["ref_gold"][j], played["ref_generated"][j]
        )
        gold, generated, ref_gold, ref_generated = objective.split([t.to(device) for t in tensors])
        with autocast():
            lp_gold, _ = objective.fmt.family.pair_logprobs(model, *gold)
            lp_generated, _ = objective.fmt.family.pair_logprobs(model, *generated)
        r_gold, r_generated = implicit_rewards(lp_gold.float(), lp_generated.float(), ref_gold, ref_generated)
        wins += int((r_gold > r_generated).sum())
        margin_sum += float((r_gold - r_generated).sum())
    n = max(1, len(examples))
    same = sum(text.strip() == ex.target.strip() for ex, text in zip(examples, played["generated"]))
    return {"reward_accuracy": wins / n, "reward_margin": margin_sum / n, "opponent_exact": same / n}


# --- the run -----------------------------------------------------------------------------------


def resolve_task(init: str, given: dict[str, Any]) -> TaskConfig:
    """The task SPIN trains on: the fine-tuned run's own, with `given` task settings (field -> value) on top.

    Naming a task or a training file replaces the run's task. A run without one (pretraining)
    needs one named: a UserError otherwise, before anything is written.
    """
    if "name" in given or "train_file" in given:
        raw = dict(given)
        raw.setdefault("name", "")
        raw.setdefault("train_file", None)
        return config_from_dict(TaskConfig, raw, source="--task/--train")
    record = ckpt_io.read_record(ckpt_io.resolve_checkpoint(init) / "config.json")
    saved = record.sections.get("finetune")
    if not isinstance(saved, dict):
        raise UserError(
            f"{init} is not a fine-tuned run (it records no task): give SPIN its prompts and answers "
            "with --task NAME or --train FILE"
        )
    task = FinetuneConfig.from_dict(saved, source=f"{init}/config.json").task
    if task.train_file:  # its files are paths a checkpoint names: never read, the user names them
        raise UserError(
            f"{init} was fine-tuned on your own files; stlm reads no path a checkpoint names: give SPIN its "
            f"data with --train {task.train_file} (and the task settings it was fine-tuned with), or --task NAME"
        )
    return apply_overrides(task, given, source="task settings") if given else task


def starting_checkpoint(init: str) -> Path:
    """A fine-tuning run starts SPIN from its best checkpoint; any other path from its newest (or itself)."""
    best = Path(init) / BEST
    return ckpt_io.resolve_checkpoint(best if best.is_dir() and ckpt_io.list_checkpoints(best) else init)


def spin(
    cfg: SpinConfig | None,
    task: TaskConfig | None,
    out: str | Path,
    *,
    resume: bool = False,
    overrides: dict[str, object] | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> SpinResult:
    """Run SPIN as `cfg` says on `task` into `out` (a new folder), or continue the run in `out` (`resume`).

    `stop_at`: stop (with a resumable checkpoint) after this global step, mid-iteration or not.
    """
    overrides = overrides or {}
    if resume:
        out = ckpt_io.resume_target(out)
    else:
        cfg = cfg.with_overrides(overrides)  # a bad setting is refused before anything is written
        ckpt_io.check_output(Path(out), reads=[Path(cfg.init)])
    with ckpt_io.run_lock(Path(out)):
        return _spin(cfg, task, Path(out), resume=resume, overrides=overrides, stop_at=stop_at, progress=progress)


def _spin(cfg, task, out: Path, *, resume, overrides, stop_at, progress) -> SpinResult:
    latest = ckpt_io.newest_verified(out) if resume else None
    if resume:
        if latest is None:
            raise UserError(f"{out} holds no complete SPIN checkpoint to resume from")
        saved = ckpt_io.load_config(latest)
        if "spin" not in saved:
            raise UserError(f"{latest} is not a SPIN checkpoint")
        cfg = SpinConfig.from_dict(saved["spin"], source=f"{latest}/config.json")
        task = config_from_dict(TaskConfig, saved["spin_task"], source=f"{latest}/config.json")
        overrides = dict(overrides)  # the user's own files, named again (a checkpoint names no path stlm reads)
        named = {k: overrides.pop(f"task.{k}") for k in TASK_FILES if f"task.{k}" in overrides}
        task = files_named_again(task, named, out)
        ckpt_io.read_state(latest, total=cfg.train.iterations * cfg.train.steps)
        cfg = apply_resume_overrides(cfg, overrides, RESUME_SAFE_KEYS, run_dir=out)
        source = latest
    else:
        if (out / "config.json").exists() or ckpt_io.list_checkpoints(out):
            raise UserError(f"{out} already holds a run; resume it with --resume {out} or choose another --out")
        cfg = dataclasses.replace(cfg, optim=resolve_warmup(cfg.optim, cfg.train.steps))
        source = starting_checkpoint(cfg.init)

    if task.direction != "direct":
        raise UserError(
            "SPIN trains a model to write its answers, and a channel classifier writes none: "
            "run it with --direction direct"
        )
    train = cfg.train
    runtime = resolve_runtime(cfg.runtime)
    decoding = decoding_runtime(cfg.runtime, runtime)  # answers' precision, as in fine-tuning
    par = distributed.Parallel(mode="none", rank=0, world_size=1, runtime=runtime)  # one process, as fine-tuning
    seed_everything(train.seed)
    loaded = ckpt_io.load(source)
    family, tokenizer = loaded.family, loaded.tokenizer
    model_cfg, model = with_dropout(family, loaded.model_config, loaded.model, cfg.dropout)  # resumed: already it
    model.train()
    fmt = TextToText(
        family,
        tokenizer,
        task.separator,
        task.max_input_bytes,
        task.max_target_bytes,
        family.max_len(model_cfg),
    )
    if progress:
        print(f"stlm spin: loading the {task.name or task.train_file} examples", file=sys.stderr, flush=True)
    data = load_task_data(FinetuneConfig(init=cfg.init, task=task), out)
    prompts = sample_examples(data.train, train.prompts, train.seed)
    val_set = sample_examples(data.val, train.eval_examples, train.seed)
    max_new = train.max_new_tokens or min(
        task.max_target_bytes + 8, max(len(tokenizer.encode(ex.target)) for ex in data.train) + 8
    )
    record = ckpt_io.RunRecord(
        family,
        model_cfg,
        tokenizer.to_dict(),
        {
            "spin": cfg.to_dict(),
            "spin_task": dataclasses.asdict(task),
            "task": {"kind": data.kind, "labels": data.labels, "max_new_tokens": max_new},
            "init_checkpoint": str(source) if latest is None else ckpt_io.load_config(latest).get("init_checkpoint"),
        },
    )
    objective = SpinObjective(fmt, train.beta, train.nll_weight, n_pair=len(fmt.batch(prompts[:1])))
    trainer = setup(
        model,
        cfg.optim,
        par,
        run_dir=out,
        nonfinite_skips=train.nonfinite_skips,
        report=lambda row: metrics_log.write(row),
        progress=progress,
    )

    def validate() -> dict[str, float]:
        return trainer.evaluate(
            lambda plain: evaluate_examples(
                plain,
                fmt,
                val_set,
                kind=data.kind,
                labels=data.labels,
                max_new_tokens=max_new,
                batch_size=train.gen_batch_size,
                device=runtime.device,
                autocast=runtime.autocast(),
                decode_autocast=decoding.autocast(),
            )[0]
        )

    state: dict[str, Any] = {"history": []}
    step = 0
    if latest is not None:
        saved_state = trainer.restore(latest)
        step, state["history"] = int(saved_state["step"]), saved_state["history"]
        state.update({k: int(saved_state[k]) for k in ("wins", "pairs") if k in saved_state})
    else:
        out.mkdir(parents=True, exist_ok=True)
        ckpt_io.write_run_config(out, {**record.to_dict(), "header": run_header(describe_training(runtime, decoding))})
        if progress:
            print(f"  scoring the starting model on {len(val_set)} validation examples", file=sys.stderr, flush=True)
        state["history"].append({"iteration": 0, **{f"val_{k}": v for k, v in validate().items()}})
    metrics_log = MetricsLog(out / "metrics.jsonl", resume_step=step if latest is not None else None)
    if latest is None:
        metrics_log.write({"step": 0, **state["history"][0]})
    if progress:
        print(
            f"  {family.name} model from {source}; {len(prompts)} prompts, {len(val_set)} val examples; "
            f"{train.iterations} iterations of {train.steps} steps of {train.batch_size}, beta {train.beta}",
            file=sys.stderr,
            flush=True,
        )

    total = train.iterations * train.steps
    stop = min(total, stop_at) if stop_at else total
    with StopSignal() as signal:  # SIGTERM/Ctrl-C: stop after the step under way, with a checkpoint
        while step < stop:
            iteration = step // train.steps + 1
            played = _opponent_answers(
                out, iteration, trainer, fmt, prompts, val_set, max_new, train, runtime, decoding, progress
            )
            # Implicit-reward wins on the iteration's training batches so far (a resumed iteration goes on counting).
            objective.wins, objective.pairs = state.pop("wins", 0), state.pop("pairs", 0)
            bar = progress_bar(f"spin {iteration}/{train.iterations}", train.steps, step % train.steps, progress)
            loss_sum, loss_n, t0 = 0.0, 0, time.perf_counter()
            trainer.model.train()
            end = min(iteration * train.steps, stop)
            while step < end:
                lr = lr_at(step - (iteration - 1) * train.steps, train.steps, cfg.optim)
                rows = batch_indices(step, train.batch_size, len(prompts), train.seed)
                tensors = objective.batch(
                    [prompts[i] for i in rows],
                    [played["train"]["generated"][i] for i in rows],
                    [played["train"]["ref_gold"][i] for i in rows],
                    [played["train"]["ref_generated"][i] for i in rows],
                )
                result = train_step(trainer, objective, [tensors], step=step, lr=lr)
                step += 1
                bar.update(1)
                if signal.requested:
                    stop = end = step
                if result.applied:
                    loss_sum, loss_n = loss_sum + float(result.loss), loss_n + 1
                if step % train.log_every == 0 and loss_n:
                    metrics_log.write(
                        {
                            "step": step,
                            "iteration": iteration,
                            "loss": loss_sum / loss_n,
                            "lr": lr,
                            "elapsed_s": time.perf_counter() - t0,
                        }
                    )
                    bar.set_postfix(loss=f"{loss_sum / loss_n:.3f}", refresh=False)
                    loss_sum, loss_n = 0.0, 0
            bar.close()
            if step < iteration * train.steps:  # stopped mid-iteration: its opponent cache resumes it
                trainer.save(
                    step, record=record, state={**state, "wins": objective.wins, "pairs": objective.pairs}, keep=1
                )
                break
            row = {
                "iteration": iteration,
                "step": step,
                "train_reward_accuracy": objective.wins / max(1, objective.pairs),
                **{f"val_{k}": v for k, v in validate().items()},
                **{
                    f"val_{k}": v
                    for k, v in trainer.evaluate(
                        lambda plain: reward_accuracy(
                            plain,
                            objective,
                            val_set,
                            played["val"],
                            batch_size=train.gen_batch_size,
                            device=runtime.device,
                            autocast=runtime.autocast,
                        )
                    ).items()
                },
            }
            state["history"].append(row)
            metrics_log.write(row)
            if progress:
                metric = {"summarization": "rougeL", "qa": "f1", "classification": "accuracy"}[data.kind]
                print(
                    f"  iteration {iteration}: val {metric} {row.get('val_' + metric, float('nan')):.4f}, "
                    f"implicit-reward accuracy {row['val_reward_accuracy']:.3f} (val), "
                    f"{row['train_reward_accuracy']:.3f} (train)",
                    file=sys.stderr,
                    flush=True,
                )
            trainer.save(step, record=record, state=state, keep=1)

    checkpoint = ckpt_io.latest_checkpoint(out)
    results = {"task": task.name or data.kind, "kind": data.kind, "beta": train.beta, "iterations": state["history"]}
    if step == total:
        ckpt_io.write_json_atomic(out / RESULTS, results)
    return SpinResult(out, step, checkpoint, results, step == total)


def _opponent_answers(out, iteration, trainer, fmt, prompts, val_set, max_new, train, runtime, decoding, progress):
    """Iteration `iteration`'s opponent answers and reference log-probs: read from its cache, or played by the
    model as it stands now (the iteration's start) and cached before training uses them."""
    path = out / OPPONENT_DIR / f"iter-{iteration}.json"
    if path.exists():
        return ckpt_io.read_json(path, what="opponent cache")
    if progress:
        print(
            f"  iteration {iteration}: the opponent answers {len(prompts)} prompts (+{len(val_set)} val)",
            file=sys.stderr,
            flush=True,
        )
    opponent = Opponent(
        trainer.par.plain(trainer.model),
        fmt,
        device=runtime.device,
        autocast=runtime.autocast,
        decode_autocast=decoding.autocast,
    )
    args = {"max_new_tokens": max_new, "batch_size": train.gen_batch_size}
    played = {"train": opponent.play(prompts, **args), "val": opponent.play(val_set, **args)}
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt_io.write_json_atomic(path, played)
    return played


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)
