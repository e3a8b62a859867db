"""Does pooling pay? Pooled byte models against unpooled bytes and a small BPE, at equal core parameters.

Five models share one global core (the pooled preset's, --size tiny|10m):

    pooled-space   pooled-<size>, a patch ends after each word (space rule, cap 12 bytes)
    pooled-fixed4  the same stack, a patch every 4 bytes
    pooled-fixed6  the same stack, a patch every 6 bytes
    unpooled       the same stack, every byte its own patch (fixed:1)
    bpe            bpe-<size>: a plain decoder whose transformer is exactly that core, over a
                   byte-level BPE of the preset's vocabulary trained on the training split

All train on the same pydocs training split with the same recipe (AdamW, cosine
schedule, lr, batch) and windows of about the same text: --seq-len bytes for
byte models, seq_len / (bytes per BPE token) tokens for the BPE model. All are
scored on the same validation documents: bits per byte over exactly their
UTF-8 bytes (BOS/EOS score nothing).

Two budgets, both printed in one table:
  (a) equal wall-clock: a calibration trains each model a few steps, round-robin
      (one step of each in turn, so machine noise hits all alike), and the median
      step time turns --budget-s seconds per model into a step count;
  (b) equal training FLOPs: FLOPs per step are counted from the matmuls and
      attention actually executed on real batches (forward + backward,
      stlm.evaluation.flops); every model gets the FLOPs pooled-space spent in (a).
Training itself also runs round-robin. Throughput (bytes/s) is the calibration's.

    .venv/bin/python bench/pooling_ladder.py --size tiny --budget-s 8 --val-bytes 16384   # smoke, ~2 min
    .venv/bin/python bench/pooling_ladder.py                                               # real, ~25 min
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

RUNGS = ("pooled-space", "pooled-fixed4", "pooled-fixed6", "unpooled", "bpe")
BOUNDARY = {"pooled-space": "space", "pooled-fixed4": "fixed:4", "pooled-fixed6": "fixed:6", "unpooled": "fixed:1"}


@dataclass
class Rung:
    """One model of the ladder: what it is, its data, and what was measured."""

    name: str
    family: str
    config: Any
    tokenizer: Any
    train: np.ndarray  # packed training ids
    val: np.ndarray  # packed validation ids (the same documents for every rung)
    seq_len: int  # ids per training window
    params: int = 0
    core_params: int = 0
    ids_per_core_step: float = 0.0  # bytes (ids) per patch, or bytes per BPE token
    flops_per_step: float = 0.0  # training (forward + backward) FLOPs of one batch
    bytes_per_step: float = 0.0
    step_s: float = 0.0  # median calibrated step time
    results: dict[str, dict[str, float]] = field(default_factory=dict)  # budget -> steps, bytes, bpb, wall
    val_bytes: int = 0  # UTF-8 bytes scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size", choices=["tiny", "10m"], default="10m", help="pooled-<size> core, bpe-<size> baseline"
    )
    parser.add_argument("--budget-s", type=float, default=150.0, help="training seconds per model for budget (a)")
    parser.add_argument("--rungs", default=",".join(RUNGS), help=f"comma-separated subset of {','.join(RUNGS)}")
    parser.add_argument("--seq-len", type=int, default=512, help="bytes per training window")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--val-bytes", type=int, default=131072, help="validation text scored (whole documents)")
    parser.add_argument(
        "--calib-steps", type=int, default=5, help="timed calibration steps per model (after 2 warm-up)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", help="token shard cache (default: the user cache)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.rungs.split(",") if n.strip()]
    if not names or any(n not in RUNGS for n in names) or "pooled-space" not in names:
        parser.error(
            f"--rungs must be a subset of {','.join(RUNGS)} that includes pooled-space (it sets the FLOP budget)"
        )

    t_start = time.perf_counter()
    rungs = build_rungs(names, args)
    calibrate(rungs, args)
    wall_steps = {r.name: max(1, round(args.budget_s / r.step_s)) for r in rungs}
    flop_budget = wall_steps["pooled-space"] * _rung(rungs, "pooled-space").flops_per_step
    flop_steps = {r.name: max(1, round(flop_budget / r.flops_per_step)) for r in rungs}

    print(f"\n(a) equal wall-clock: {args.budget_s:g} s per model -> steps {wall_steps}", file=sys.stderr)
    train_round_robin(rungs, wall_steps, "wall", args)
    print(f"(b) equal FLOPs: {flop_budget / 1e12:.3f} TFLOP per model -> steps {flop_steps}", file=sys.stderr)
    # A rung with the same step count in both budgets trains identically: reuse its result.
    again = [r for r in rungs if flop_steps[r.name] != wall_steps[r.name]]
    for r in rungs:
        if r not in again:
            r.results["flops"] = dict(r.results["wall"])
    train_round_robin(again, flop_steps, "flops", args)
    report(rungs, args, flop_budget, time.perf_counter() - t_start)


# --- set-up --------------------------------------------------------------------------------------


def build_rungs(names: list[str], args: argparse.Namespace) -> list[Rung]:
    from stlm import registry
    from stlm.data import load_documents, prepare_data, split_documents
    from stlm.data.shards import encode_document
    from stlm.tokenizers import ByteTokenizer, train_bpe

    docs = load_documents("pydocs", cache_dir=args.cache_dir)
    train_docs, val_docs = split_documents(docs, val_fraction=0.05, seed=0)  # prepare_data's split
    chosen, n = [], 0
    for doc in val_docs:  # whole documents until --val-bytes
        chosen.append(doc)
        n += len(doc.encode("utf-8"))
        if n >= args.val_bytes:
            break

    def val_stream(tok: Any) -> np.ndarray:
        return np.concatenate([encode_document(d, tok) for d in chosen]).astype(np.int64)

    byte_tok = ByteTokenizer()
    byte_data = prepare_data("pydocs", byte_tok, cache_dir=args.cache_dir, progress=False)
    byte_val = val_stream(byte_tok)
    rungs = []
    for name in names:
        if name == "bpe":
            family, cfg = registry.get_config(f"bpe-{args.size}")
            t0 = time.perf_counter()
            tok = train_bpe(train_docs, cfg.vocab_size)
            print(
                f"trained a {tok.vocab_size}-id byte-level BPE on the training split in {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
            data = prepare_data("pydocs", tok, cache_dir=args.cache_dir, progress=False)
            bytes_per_token = data.meta["train"]["bytes"] / data.meta["train"]["tokens"]
            seq_len = max(8, round(args.seq_len / bytes_per_token))
            rungs.append(Rung(name, family, cfg, tok, data.train, val_stream(tok), seq_len))
        else:
            family, cfg = registry.get_config(f"pooled-{args.size}")
            cfg = dataclasses.replace(cfg, boundary=BOUNDARY[name])
            rungs.append(Rung(name, family, cfg, byte_tok, byte_data.train, byte_val, args.seq_len))
    for r in rungs:
        r.params = registry.count_params(r.family, r.config)
        r.core_params = core_params(r)
    assert len({int(r.tokenizer.byte_lengths()[r.val].sum()) for r in rungs}) == 1, "validation bytes differ"
    return rungs


def core_params(r: Rung) -> int:
    """The global core: pooled core blocks + norm, or the decoder's blocks + final norm."""
    from stlm import registry
    from stlm.models.byte_decoder.config import param_breakdown

    if r.family == "pooled":
        return param_breakdown(r.config)["core"]
    return registry.count_params(r.family, r.config) - r.config.vocab_size * r.config.d_model


def new_model(r: Rung, args: argparse.Namespace, steps: int):
    """A freshly initialised model (same seed for every rung), its optimizer and its data loader."""
    from stlm import registry
    from stlm.config import OptimConfig
    from stlm.data import WindowLoader
    from stlm.training.optim import build_optimizer

    torch.manual_seed(args.seed)
    model = registry.build_model(r.family, r.config).train()
    optim_cfg = OptimConfig(lr=args.lr, warmup_steps=min(100, max(1, steps // 10)))
    optimizer = build_optimizer(model, optim_cfg, torch.device("cpu"))
    loader = WindowLoader(r.train, r.seq_len, args.batch, seed=args.seed)
    return model, optimizer, optim_cfg, loader


def train_step(model, optimizer, window: torch.Tensor) -> None:
    from stlm.objectives.next_token import model_loss

    loss = model_loss(model, window)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# --- calibration: FLOPs and step time, side by side -----------------------------------------------


def calibrate(rungs: list[Rung], args: argparse.Namespace) -> None:
    from stlm.evaluation.flops import count_flops
    from stlm.models.byte_decoder.boundaries import mean_patch_length
    from stlm.objectives.next_token import model_loss

    warmup, repeats = 2, args.calib_steps
    state = {}
    for r in rungs:
        model, optimizer, _, loader = new_model(r, args, steps=1000)
        lengths = torch.as_tensor(r.tokenizer.byte_lengths())
        windows = [loader.next_batch() for _ in range(warmup + repeats)]  # (B, T+1) each
        flops = [count_flops(lambda w=w: model_loss(model, w).backward()) for w in windows[:2]]
        optimizer.zero_grad(set_to_none=True)
        r.flops_per_step = float(np.mean(flops))
        r.bytes_per_step = float(np.mean([int(lengths[w[:, 1:]].sum()) for w in windows]))
        if r.family == "pooled":
            r.ids_per_core_step = mean_patch_length(model, torch.as_tensor(r.val))
        else:
            r.ids_per_core_step = float(lengths[torch.as_tensor(r.val)].sum()) / len(r.val)  # bytes per token
        state[r.name] = (model, optimizer, windows, [])
    for i in range(warmup + repeats):  # round-robin: one step of each model in turn
        for r in rungs:
            model, optimizer, windows, times = state[r.name]
            t0 = time.perf_counter()
            train_step(model, optimizer, windows[i])
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    for r in rungs:
        r.step_s = statistics.median(state[r.name][3])
        print(
            f"calibrated {r.name:14s} {r.step_s:6.3f} s/step  {r.bytes_per_step / r.step_s:9,.0f} bytes/s  "
            f"{r.flops_per_step / r.bytes_per_step / 1e6:8.2f} MFLOP/byte",
            file=sys.stderr,
        )


# --- training and scoring -------------------------------------------------------------------------


def train_round_robin(rungs: list[Rung], steps: dict[str, int], budget: str, args: argparse.Namespace) -> None:
    """Train each rung for its step count, one step of each in turn; then score the validation bytes."""
    from stlm.training.optim import lr_at, set_lr

    runs = {r.name: (r, *new_model(r, args, steps[r.name]), [0.0]) for r in rungs}
    for step in range(max((steps[r.name] for r in rungs), default=0)):
        for r, model, optimizer, optim_cfg, loader, wall in runs.values():
            if step < steps[r.name]:
                set_lr(optimizer, lr_at(step, steps[r.name], optim_cfg))
                window = loader.next_batch()
                t0 = time.perf_counter()
                train_step(model, optimizer, window)
                wall[0] += time.perf_counter() - t0
    for r, model, _, _, _, wall in runs.values():
        bpb = score(r, model)
        r.results[budget] = {
            "steps": steps[r.name],
            "train_bytes": steps[r.name] * r.bytes_per_step,
            "wall_s": wall[0],
            "bpb": bpb,
            "flops": steps[r.name] * r.flops_per_step,
        }
        print(
            f"  {budget:5s} {r.name:14s} {steps[r.name]:6d} steps {wall[0]:7.1f} s  val {bpb:.4f} bits/byte",
            file=sys.stderr,
        )


def score(r: Rung, model) -> float:
    from stlm.evaluation.bpb import bits_per_byte

    result = bits_per_byte(
        model,
        r.val,
        context=r.seq_len,
        stride=max(1, r.seq_len // 2),
        batch_size=8,
        byte_lengths=r.tokenizer.byte_lengths(),
    )
    r.val_bytes = result.n_bytes
    return result.bits_per_byte


# --- the table ------------------------------------------------------------------------------------


def report(rungs: list[Rung], args: argparse.Namespace, flop_budget: float, elapsed: float) -> None:
    unpooled = next((r for r in rungs if r.name == "unpooled"), None)
    print(
        f"\npooling ladder: size {args.size}, pydocs, torch {torch.__version__}, {torch.get_num_threads()} threads, fp32; "
        f"batch {args.batch} x {args.seq_len} bytes (BPE: the same text in tokens), AdamW lr {args.lr:g} cosine; "
        f"validation {rungs[0].val_bytes:,} bytes, the same documents for every model\n"
        f"(a) equal wall-clock: {args.budget_s:g} s of training per model, converted to steps by a round-robin "
        f"calibration (median of {args.calib_steps} steps after 2 warm-up); "
        f"(b) equal FLOPs: {flop_budget / 1e12:.3f} TFLOP per model (what pooled-space spends in (a)); "
        f"FLOPs = matmuls + attention executed in forward + backward. total run {elapsed / 60:.1f} min\n"
    )
    header = (
        "model",
        "params",
        "core",
        "bytes/core step",
        "MFLOP/byte",
        "train bytes/s",
        "vs unpooled",
        "(a) steps",
        "(a) MB",
        "(a) val BPB",
        "(b) steps",
        "(b) MB",
        "(b) val BPB",
    )
    rows = [header]
    for r in rungs:
        rate = r.bytes_per_step / r.step_s
        ratio = f"{rate / (unpooled.bytes_per_step / unpooled.step_s):.2f}x" if unpooled else "-"
        a, b = r.results["wall"], r.results["flops"]
        rows.append(
            (
                r.name,
                f"{r.params:,}",
                f"{r.core_params:,}",
                f"{r.ids_per_core_step:.2f}",
                f"{r.flops_per_step / r.bytes_per_step / 1e6:.2f}",
                f"{rate:,.0f}",
                ratio,
                str(a["steps"]),
                f"{a['train_bytes'] / 1e6:.2f}",
                f"{a['bpb']:.4f}",
                str(b["steps"]),
                f"{b['train_bytes'] / 1e6:.2f}",
                f"{b['bpb']:.4f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        print(
            "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"
        )
        if n == 0:
            print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
    print(
        "\nbytes/core step: bytes (ids) per patch for pooled models, UTF-8 bytes per token for BPE. "
        "MB: training text seen. (a) wall time actually spent training: "
        + ", ".join(f"{r.name} {r.results['wall']['wall_s']:.0f} s" for r in rungs)
    )


def _rung(rungs: list[Rung], name: str) -> Rung:
    return next(r for r in rungs if r.name == name)


if __name__ == "__main__":
    main()
