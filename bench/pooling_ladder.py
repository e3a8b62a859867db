"""Does pooling pay? Learning curves of pooled byte models against unpooled bytes and BPE decoders.

Two views of the ladder (`--view`):

  equal-params (the headline): every rung has the same TOTAL parameters as the
      pooled preset (`pooled-<size>`, embeddings, hash tables and heads counted),
      within 2%:
        pooled-space    pooled-<size>, a patch ends after each word
        pooled-entropy  the same stack, patches from the next-byte entropy rule
        unpooled        the same stack, every byte its own patch (fixed:1)
        bpe-4k/16k/32k  plain decoders over byte-level BPEs of 4,096 / 16,384 / 32,768 ids
                        (trained on the training split), each sized so that vocabulary table +
                        core = the pooled total: a large vocabulary leaves a small core
  equal-core (the earlier view): one global core for all; pooled-space, pooled-fixed4,
      pooled-fixed6, unpooled, and bpe-<size> (4,096 ids, whose transformer is that core).
  variants: candidate pooled presets at the same total parameters (VARIANTS: a leaner local
      stack, more hash rows, longer entropy patches, ...; each core re-sized to the total),
      beside pooled-entropy, whose run (same folder, same config) the equal-params view shares.
  all: equal-params and the variants together (for one `report` over every rung run).

Every rung trains on the same corpus (default `offline-mix`) with the same
recipe (AdamW, warm-up then cosine over the rung's planned steps, batch, text
per window) for the same training-FLOP budget, and logs a learning curve:
validation bits per byte on the corpus's validation split and on WikiText-2
against training FLOPs (counted from the matmuls and attention executed,
`stlm.evaluation.flops`) and against calibrated wall-clock (steps x the
rung's median step time, measured once in a calibration, so other work on the
machine does not bend the time axis). One long run per rung gives both the
equal-FLOPs and the equal-time comparisons.

Training is resumable: `train` runs for at most --minutes, saves the rung's
state (model, optimizer, data position, curve) atomically in OUT/RUNG/, and
the next `train` continues it exactly, until the rung's budget is spent.

    python bench/pooling_ladder.py plan                                # rungs, exact parameter accounting
    python bench/pooling_ladder.py sweep --rung bpe-16k --lrs 1e-3,2e-3,4e-3 --tflops 20 --out runs/ladder
    python bench/pooling_ladder.py train --out runs/ladder --rung pooled-space --lr 2e-3 --tflops 400 --minutes 9
    python bench/pooling_ladder.py report --out runs/ladder            # tables + PNG curves in OUT/
    python bench/pooling_ladder.py all --out runs/ladder [--rungs a,b]  # calibrate, sweep, train; resumable
    python bench/pooling_ladder.py calibrate --out runs/ladder --view variants --rungs pooled-lean-local,pooled-more-hash
    python bench/pooling_ladder.py export --out runs/ladder --view all --rung pooled-hash-long --to runs/hash-long
                                                                       # a rung's model as a stlm run folder
    python bench/pooling_ladder.py overlap --out runs/ladder --view all   # BPB on text repeated from training, and the rest
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

EQUAL_PARAMS = ("pooled-space", "pooled-entropy", "unpooled")  # + one BPE rung per --bpe-vocabs entry
EQUAL_CORE = ("pooled-space", "pooled-fixed4", "pooled-fixed6", "unpooled", "bpe")
BOUNDARY = {
    "pooled-space": "space",
    "pooled-entropy": "entropy",
    "pooled-fixed4": "fixed:4",
    "pooled-fixed6": "fixed:6",
    "unpooled": "fixed:1",
}
BPE_VOCABS = (4096, 16384, 32768)
# Candidate pooled presets (view `variants`): each changes pooled-<size> with the entropy rule (the
# stronger pooled rung of the main ladder) and re-sizes the core to the same total parameters.
VARIANT_BASE = "pooled-entropy"
LEAN_LOCAL = {"d_local": 128, "local_heads": 2, "n_dec_layers": 1}
LONG_PATCH = {"entropy_patch_len": 8.0, "max_patch_len": 16}
VARIANTS: dict[str, dict[str, Any]] = {
    # a narrower, shallower local stack: every byte costs fewer FLOPs, the core gets the parameters
    "lean-local": LEAN_LOCAL,
    # 4x the hashed n-gram rows (BLT): lookups cost no FLOPs, so the capacity is free per byte; the core shrinks
    "more-hash": {"hash_buckets": 8192},
    # the same at 7,680 rows: 2% fewer parameters, within 1% of every equal-params rung (more-hash is +3.4% on bpe-4k)
    "more-hash-7680": {"hash_buckets": 7680},
    # longer entropy patches (mean 8 bytes, cap 16): the core runs less often, more text per FLOP
    "long-patch": LONG_PATCH,
    # the two that cost no FLOPs per byte together (the preset pooled-10m-hash with longer patches)
    "hash-long": {"hash_buckets": 7680, **LONG_PATCH},
    # SpaceByte's word boundaries with the extra hash rows: a patch is a word, as bag-of-words features are
    "hash-space": {"hash_buckets": 7680, "boundary": "space"},
    # hash-long with BLT's longer n-grams: sizes 3-6 instead of 2-4, the same rows in all (4 x 5,760 = 3 x 7,680)
    "hash-long-3to6": {"hash_buckets": 5760, "hash_ngrams": (3, 4, 5, 6), **LONG_PATCH},
    # n-grams up to 8 bytes as BLT uses them, the same rows again (6 x 3,840)
    "hash-long-3to8": {"hash_buckets": 3840, "hash_ngrams": (3, 4, 5, 6, 7, 8), **LONG_PATCH},
    # the same n-grams with SpaceByte's word-boundary patches
    "hash-space-3to8": {"hash_buckets": 3840, "hash_ngrams": (3, 4, 5, 6, 7, 8), "boundary": "space"},
    # all three
    "lean-hash-long": {**LEAN_LOCAL, "hash_buckets": 8192, **LONG_PATCH},
    # hash-long-3to8 with a deeper, narrower core (MobileLLM's finding at 125M): the same parameters in
    # 13 layers of 192 instead of 7 of 256 (the core's width per layer, below)
    "hash-long-3to8-deep": {"hash_buckets": 3840, "hash_ngrams": (3, 4, 5, 6, 7, 8), **LONG_PATCH},
}
# A variant's core width per layer when it is not the reference preset's (320 / 7): the sizer picks the
# (width, depth) closest to it at the same total
VARIANT_ASPECT = {"hash-long-3to8-deep": 15.0}
TOLERANCE = 0.02  # equal-params rungs: |total - target| / target at most this
EDGE_STEPS = 2  # sweeps: extra rates tried beyond the grid when its best rate sits on an edge


# --- rungs and their parameters -------------------------------------------------------------------


@dataclass(frozen=True)
class RungSpec:
    """One model of the ladder, before any data: its family, config and tokenizer kind."""

    name: str
    family: str
    config: Any
    bpe_vocab: int = 0  # 0: bytes


def bpe_name(vocab: int) -> str:
    return f"bpe-{vocab // 1024}k" if vocab % 1024 == 0 else f"bpe-{vocab}"


def rung_specs(size: str, view: str = "equal-params", bpe_vocabs: tuple[int, ...] = BPE_VOCABS) -> list[RungSpec]:
    """The rungs of a view at a size, with their exact configs (equal-params: one BPE rung per vocabulary)."""
    from stlm import registry

    if view == "all":  # the equal-params ladder and the candidate presets, in one table (pooled-entropy once)
        main = rung_specs(size, "equal-params", bpe_vocabs)
        taken = {m.name for m in main}
        return main + [s for s in rung_specs(size, "variants", bpe_vocabs) if s.name not in taken]
    family, pooled = registry.get_config(f"pooled-{size}")
    _, bpe_ref = registry.get_config(f"bpe-{size}")
    specs = []
    vocabs = {bpe_name(v): v for v in bpe_vocabs}
    names = {"equal-params": (*EQUAL_PARAMS, *vocabs), "equal-core": EQUAL_CORE}.get(view)
    target = registry.count_params(family, pooled)
    if names is None:  # variants: their base rung, then each candidate re-sized to its total
        base = dataclasses.replace(pooled, boundary=BOUNDARY[VARIANT_BASE])
        sized = [
            sized_pooled(dataclasses.replace(base, **VARIANTS[v]), target, pooled, aspect=VARIANT_ASPECT.get(v))
            for v in VARIANTS
        ]
        return [RungSpec(VARIANT_BASE, family, base)] + [
            RungSpec(f"pooled-{v}", family, cfg) for v, cfg in zip(VARIANTS, sized)
        ]
    for name in names:
        if name in BOUNDARY:
            specs.append(RungSpec(name, family, dataclasses.replace(pooled, boundary=BOUNDARY[name])))
        elif name == "bpe":
            specs.append(RungSpec(name, "decoder", bpe_ref, bpe_ref.vocab_size))
        elif name in vocabs:
            specs.append(RungSpec(name, "decoder", sized_decoder(vocabs[name], target, bpe_ref), vocabs[name]))
    return specs


def sized_decoder(vocab: int, target: int, ref: Any, tolerance: float = TOLERANCE) -> Any:
    """A decoder over `vocab` ids whose total parameters are within `tolerance` of `target`.

    Widths are multiples of the reference's head width (two heads at least) and the
    feed-forward keeps the reference's d_ff / d_model ratio (rounded to 32);
    of all (width, depth) pairs within tolerance, the one whose width per layer
    is closest (on a log scale) to the reference's wins, so every BPE rung has
    the reference's shape as nearly as its budget allows. Counts are exact
    (`registry.count_params`).
    """
    ratio = ref.d_ff / ref.d_model
    return _closest_shape(
        "decoder",
        lambda width, depth: dataclasses.replace(
            ref,
            vocab_size=vocab,
            d_model=width,
            n_heads=width // ref.d_head,
            n_layers=depth,
            d_ff=32 * max(1, round(ratio * width / 32)),
        ),
        range(2 * ref.d_head, 4 * ref.d_model + 1, ref.d_head),
        ref.d_model / ref.n_layers,
        target,
        tolerance,
        f"no decoder over {vocab} ids fits {target:,} parameters within {tolerance:.0%}",
    )


def sized_pooled(cfg: Any, target: int, ref: Any, tolerance: float = TOLERANCE, *, aspect: float | None = None) -> Any:
    """`cfg` with its core (width, depth) re-chosen so the total parameters are within `tolerance` of `target`.

    Widths are multiples of the reference's core head width; the feed-forward
    width follows the default rule; of the (width, depth) pairs within
    tolerance the one closest (log scale) to `aspect` width per layer wins (by
    default the reference's).
    """
    head = ref.d_head_global
    return _closest_shape(
        "pooled",
        lambda width, depth: dataclasses.replace(
            cfg, d_global=width, global_heads=width // head, n_global_layers=depth, d_ff_global=None
        ),
        range(2 * head, 3 * ref.d_global + 1, head),
        aspect or ref.d_global / ref.n_global_layers,
        target,
        tolerance,
        f"no core fits {target:,} parameters within {tolerance:.0%} for {cfg}",
    )


def _closest_shape(family, build, widths, aspect: float, target: int, tolerance: float, error_text: str) -> Any:
    """Of build(width, depth) over `widths` x depths 1-48 with total parameters within `tolerance` of
    `target`, the config whose width per layer is closest (log scale) to `aspect` (then the smaller error)."""
    from stlm import registry
    from stlm.errors import UserError

    best: tuple[float, float, Any] | None = None
    for width in widths:
        for depth in range(1, 49):
            cfg = build(width, depth)
            error = abs(registry.count_params(family, cfg) - target) / target
            key = (abs(math.log((width / depth) / aspect)), error, cfg)
            if error <= tolerance and (best is None or key[:2] < best[:2]):
                best = key
    if best is None:
        raise UserError(error_text)
    return best[2]


def breakdown(spec: RungSpec) -> dict[str, int]:
    """Exact parameters by part: vocabulary tables (embeddings, hash tables, untied head), core, the rest, total."""
    from stlm import registry
    from stlm.models.byte_decoder.config import param_breakdown

    total = registry.count_params(spec.family, spec.config)
    if spec.family == "pooled":
        parts = param_breakdown(spec.config)
        tables = parts["embeddings"] + parts["hash_tables"] + parts["head"]
        return {"tables": tables, "core": parts["core"], "other": total - tables - parts["core"], "total": total}
    cfg = spec.config
    tables = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    return {"tables": tables, "core": total - tables, "other": 0, "total": total}


# --- data -----------------------------------------------------------------------------------------


@dataclass
class Rung:
    spec: RungSpec
    tokenizer: Any
    train: np.ndarray
    val: np.ndarray  # the corpus's validation text (the same documents for every rung)
    wiki: np.ndarray | None  # WikiText-2 validation text, or None when not available
    seq_len: int  # ids per training window


def load_rung(spec: RungSpec, args: argparse.Namespace, split: tuple | None = None) -> Rung:
    """The rung's tokenizer (a BPE is trained once and kept in OUT/tokenizers/) and its token streams;
    `split`: `corpus_split(args)` when the caller has it already (several rungs read the same)."""
    from stlm.data import prepare_data
    from stlm.data.shards import encode_document
    from stlm.tokenizers import BPETokenizer, ByteTokenizer, train_bpe

    train_docs, val_docs = split or corpus_split(args)
    if spec.bpe_vocab:
        path = bpe_path(args, spec.bpe_vocab)
        if path.is_file():
            tok = BPETokenizer.from_file(path)
        else:
            sample, n = [], 0
            for doc in train_docs:  # the first --bpe-train-bytes of the training split, whole documents
                sample.append(doc)
                n += len(doc.encode("utf-8"))
                if n >= args.bpe_train_bytes:
                    break
            tok = train_bpe(sample, spec.bpe_vocab)
            path.parent.mkdir(parents=True, exist_ok=True)
            tok.save(path)
    else:
        tok = ByteTokenizer()
    data = prepare_data(args.data, tok, cache_dir=args.cache_dir, progress=False)

    def stream(texts: list[str]) -> np.ndarray:
        return np.concatenate([encode_document(doc, tok) for doc in texts]).astype(np.int64)

    val_texts, wiki_texts = held_out_texts(val_docs, args)
    seq_len = args.seq_len
    if spec.bpe_vocab:  # about the same text per window as the byte models
        seq_len = max(8, round(args.seq_len * data.meta["train"]["tokens"] / data.meta["train"]["bytes"]))
    wiki = None if wiki_texts is None else stream(wiki_texts)
    return Rung(spec, tok, data.train, stream(val_texts), wiki, seq_len)


def corpus_split(args: argparse.Namespace):
    """(training, validation) documents of --data: prepare_data's split."""
    from stlm.data import load_documents, split_documents

    return split_documents(load_documents(args.data, cache_dir=args.cache_dir), val_fraction=0.05, seed=0)


def leading_documents(texts, n_bytes: int) -> list[str]:
    """Whole documents from the start of `texts` until they hold at least `n_bytes` UTF-8 bytes."""
    chosen, n = [], 0
    for doc in texts:
        chosen.append(doc)
        n += len(doc.encode("utf-8"))
        if n >= n_bytes:
            break
    return chosen


def held_out_texts(val_docs, args: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    """The documents every curve point scores: the corpus's validation split and WikiText-2 (whole
    articles; None without it), each until --val-bytes."""
    articles = None
    if args.wikitext == "":
        articles = _hub_wikitext()
    elif args.wikitext != "none":
        articles = wikitext_articles(Path(args.wikitext).read_text(encoding="utf-8"))
    wiki = None if articles is None else leading_documents(articles, args.val_bytes)
    return leading_documents(val_docs, args.val_bytes), wiki


def bpe_path(args: argparse.Namespace, vocab: int) -> Path:
    """Where a BPE rung's tokenizer is kept: trained once per corpus and vocabulary, in OUT/tokenizers/."""
    return Path(args.out) / "tokenizers" / f"{args.data.replace('/', '_')}-bpe{vocab}.json"


def wikitext_articles(text: str) -> list[str]:
    """WikiText's text cut into its articles (each starts at a ` = Title = ` line), in order."""
    starts = [m.start() for m in re.finditer(r"^ = [^=].* = $", text, flags=re.M)] or [0]
    return [text[a:b] for a, b in zip([0, *starts[1:]], [*starts[1:], len(text)])]


def _hub_wikitext() -> list[str] | None:
    """WikiText-2 validation articles from the evaluation data folder or the Hub (docs/evaluation.md);
    None if neither."""
    from stlm.errors import UserError
    from stlm.evaluation.hub import WIKITEXT2, load_rows
    from stlm.evaluation.tasks import resolve_data_dir

    folder = resolve_data_dir(None, os.environ.get("STLM_DATA_DIR"), Path.cwd())
    if folder is not None and (folder / "wikitext-2" / "valid.txt").is_file():
        return wikitext_articles((folder / "wikitext-2" / "valid.txt").read_text(encoding="utf-8"))
    try:
        return wikitext_articles("".join(str(r["text"]) for r in load_rows(WIKITEXT2, "validation").rows))
    except UserError as exc:
        print(f"no WikiText-2 curve: {exc}", file=sys.stderr)
        return None


# --- one rung's resumable run ---------------------------------------------------------------------


def new_training(rung: Rung, lr: float, total_steps: int, args: argparse.Namespace):
    """A freshly initialised model (the same seed for every rung), its optimizer, schedule and loader."""
    from stlm import registry
    from stlm.config import OptimConfig
    from stlm.data import WindowLoader
    from stlm.training.optim import build_optimizer

    torch.manual_seed(args.seed)
    model = registry.build_model(rung.spec.family, rung.spec.config).train()
    # What `stlm train` does before step 0: the entropy rule's table and threshold are fitted to the
    # training text (deterministic, buffers in the state, so a resumed rung loads the same fit).
    registry.get_family(rung.spec.family).before_training(model, rung.train)
    optim_cfg = OptimConfig(lr=lr, warmup_steps=min(200, max(1, total_steps // 20)))
    optimizer = build_optimizer(model, optim_cfg, torch.device("cpu"))
    loader = WindowLoader(rung.train, rung.seq_len, args.batch, seed=args.seed)
    return model, optimizer, optim_cfg, loader


def step_once(model, optimizer, window: torch.Tensor) -> None:
    from stlm.objectives.next_token import model_loss

    model_loss(model, window).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def calibrate(rungs: list[Rung], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """FLOPs, bytes and median time of one training step per rung, on throw-away copies of the models.

    The rungs take turns step by step (round-robin), so whatever else the
    machine does hits all of them alike.
    """
    from stlm.evaluation.flops import count_flops
    from stlm.objectives.next_token import model_loss

    runs, windows = [], []
    for rung in rungs:
        model, optimizer, _, loader = new_training(rung, 1e-4, 1000, args)
        batches = [loader.next_batch() for _ in range(2 + args.calib_steps)]  # (B, T+1) each
        flops = [count_flops(lambda w=w: model_loss(model, w).backward()) for w in batches[:2]]
        optimizer.zero_grad(set_to_none=True)
        runs.append((model, optimizer, flops))
        windows.append(batches)
    times: list[list[float]] = [[] for _ in rungs]
    for i in range(2 + args.calib_steps):
        for r, (model, optimizer, _) in enumerate(runs):
            t0 = time.perf_counter()
            step_once(model, optimizer, windows[r][i])
            if i >= 2:  # after two warm-up steps
                times[r].append(time.perf_counter() - t0)
    out = {}
    for r, rung in enumerate(rungs):
        lengths = torch.as_tensor(rung.tokenizer.byte_lengths())
        out[rung.spec.name] = {
            "flops_per_step": float(np.mean(runs[r][2])),
            "bytes_per_step": float(np.mean([int(lengths[w[:, 1:]].sum()) for w in windows[r]])),
            "step_s": statistics.median(times[r]),
            "threads": torch.get_num_threads(),
        }
    return out


def calibration(rung: Rung, args: argparse.Namespace) -> dict[str, float]:
    """The rung's calibration from OUT/calibration.json (`calibrate` command), else measured now, alone."""
    path = Path(args.out) / "calibration.json"
    saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return saved.get(rung.spec.name) or calibrate([rung], args)[rung.spec.name]


def val_bpb(rung: Rung, model, stream: np.ndarray, args: argparse.Namespace) -> float:
    from stlm.evaluation.bpb import bits_per_byte

    was = model.training
    model.eval()
    try:
        return bits_per_byte(
            model,
            stream,
            context=rung.seq_len,
            stride=max(1, round(rung.seq_len * args.eval_stride)),
            batch_size=8,
            byte_lengths=rung.tokenizer.byte_lengths(),
        ).bits_per_byte
    finally:
        model.train(was)


def train_rung(
    rung: Rung,
    run_dir: Path,
    lr: float,
    tflops: float,
    minutes: float,
    args: argparse.Namespace,
    *,
    steps: int = 0,
    stop_at: int = 0,
) -> dict:
    """Train (or continue) one rung in `run_dir` for at most `minutes`; returns its state summary.

    The plan (calibration, total steps for `tflops` or `steps` when given, lr)
    is fixed on the first call and saved; later calls continue it exactly: the
    same batches, the same schedule, the same curve an uninterrupted run would
    have logged. `stop_at` ends this piece after that step (0: no limit).
    """
    from stlm.training.optim import lr_at, set_lr

    state_path, curve_path = run_dir / "state.pt", run_dir / "curve.jsonl"
    run_dir.mkdir(parents=True, exist_ok=True)
    if state_path.is_file():
        saved = torch.load(state_path, weights_only=True)  # plain tensors and containers: no pickle runs
        plan = saved["plan"]
        model, optimizer, optim_cfg, loader = new_training(rung, plan["lr"], plan["total_steps"], args)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        loader.load_state_dict(saved["loader"])
        step = saved["step"]
    else:
        plan = {**calibration(rung, args), "lr": lr, "tflops": tflops, "params": breakdown(rung.spec)}
        plan["total_steps"] = steps or max(1, round(tflops * 1e12 / plan["flops_per_step"]))
        plan["eval_steps"] = sorted(
            {max(1, round(plan["total_steps"] * (i / args.curve_points) ** 2)) for i in range(1, args.curve_points + 1)}
        )  # denser early, where the curves move fastest
        model, optimizer, optim_cfg, loader = new_training(rung, lr, plan["total_steps"], args)
        step = 0
        curve_path.write_text("", encoding="utf-8")
    deadline = time.perf_counter() + 60 * minutes
    end = min(plan["total_steps"], stop_at or plan["total_steps"])
    while step < end and time.perf_counter() < deadline:
        set_lr(optimizer, lr_at(step, plan["total_steps"], optim_cfg))
        step_once(model, optimizer, loader.next_batch())
        step += 1
        if step in plan["eval_steps"]:
            point = {
                "step": step,
                "flops": step * plan["flops_per_step"],
                "wall_s": step * plan["step_s"],  # calibrated: the machine's load does not bend it
                "train_bytes": step * plan["bytes_per_step"],
                "val_bpb": val_bpb(rung, model, rung.val, args),
                "wikitext_bpb": None if rung.wiki is None else val_bpb(rung, model, rung.wiki, args),
            }
            with open(curve_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(point) + "\n")
    tmp = state_path.with_suffix(".part")
    torch.save(
        {
            "plan": plan,
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "loader": loader.state_dict(),
        },
        tmp,
    )
    os.replace(tmp, state_path)  # a run killed while saving keeps its previous state
    return {
        "rung": rung.spec.name,
        "step": step,
        "total_steps": plan["total_steps"],
        "done": step >= plan["total_steps"],
    }


def read_curve(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "curve.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


def at(curve: list[dict[str, Any]], axis: str, x: float, key: str = "val_bpb") -> float | None:
    """The curve's `key` at `axis` = x, linearly interpolated; None outside the curve."""
    points = [(p[axis], p[key]) for p in curve if p.get(key) is not None]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return points[-1][1] if points and math.isclose(points[-1][0], x) else None


# --- commands -------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> None:
    specs = rung_specs(args.size, args.view, args.bpe_vocabs)
    target = breakdown(specs[0])["total"]
    rows = [("rung", "family", "shape", "vocab tables", "core", "other", "total", f"vs {specs[0].name}")]
    for spec in specs:
        b, c = breakdown(spec), spec.config
        shape = (
            f"d={c.d_model} L={c.n_layers} ff={c.d_ff} V={c.vocab_size}"
            if spec.family == "decoder"
            else f"core {c.d_global}x{c.n_global_layers}, {c.boundary}"
        )
        rows.append(
            (
                spec.name,
                spec.family,
                shape,
                f"{b['tables']:,}",
                f"{b['core']:,}",
                f"{b['other']:,}",
                f"{b['total']:,}",
                f"{(b['total'] - target) / target:+.2%}",
            )
        )
    print_table(rows)


def cmd_sweep(args: argparse.Namespace) -> None:
    spec = next(s for s in rung_specs(args.size, args.view, args.bpe_vocabs) if s.name == args.rung)
    run_sweep(load_rung(spec, args), args)


def run_sweep(rung: Rung, args: argparse.Namespace) -> None:
    """Short runs of the rung at each of --lrs (resumable), summarised in OUT/sweep/RUNG.json once complete.

    When the best rate is the largest (smallest) tried, the next rate up (down), x2, is tried
    too, up to EDGE_STEPS times, so a rung does not train at the edge of a grid that was too narrow.
    """
    results: dict[str, dict[str, Any]] = {}
    rung = dataclasses.replace(rung, wiki=None)  # a sweep picks the rate on the validation split alone
    rates = [float(x) for x in args.lrs.split(",")]
    extra = 0
    while True:
        for lr in rates:
            if f"{lr:g}" in results:
                continue
            run_dir = Path(args.out) / "sweep" / f"{args.rung}-lr{lr:g}"
            summary = train_rung(rung, run_dir, lr, args.tflops, args.minutes, args, steps=args.steps)
            curve = read_curve(run_dir)
            results[f"{lr:g}"] = {**summary, "val_bpb": curve[-1]["val_bpb"] if curve else None}
            print(json.dumps({"lr": lr, **results[f"{lr:g}"]}), flush=True)
        if not all(r["done"] and r["val_bpb"] is not None for r in results.values()):
            return  # a piece ran out of time: the next call continues (the summary is written once complete)
        best = float(min(results, key=lambda lr: results[lr]["val_bpb"]))
        if extra == EDGE_STEPS or min(rates) < best < max(rates):
            break
        rates.append(best * 2 if best == max(rates) else best / 2)
        extra += 1
    path = Path(args.out) / "sweep" / f"{args.rung}.json"
    path.with_suffix(".part").write_text(json.dumps(results, indent=1), encoding="utf-8")
    os.replace(path.with_suffix(".part"), path)  # complete or absent: `best_lr` trusts it


def cmd_train(args: argparse.Namespace) -> None:
    spec = next(s for s in rung_specs(args.size, args.view, args.bpe_vocabs) if s.name == args.rung)
    rung = load_rung(spec, args)
    summary = train_rung(
        rung,
        Path(args.out) / args.rung,
        args.lr,
        args.tflops,
        args.minutes,
        args,
        steps=args.steps,
        stop_at=args.stop_at,
    )
    print(json.dumps(summary))
    if not summary["done"]:
        limit = f"--stop-at {args.stop_at}" if summary["step"] == args.stop_at else f"--minutes {args.minutes:g}"
        print(
            f"{args.rung}: this piece stopped at step {summary['step']} of {summary['total_steps']} ({limit}); "
            "run `train` again to continue",
            file=sys.stderr,
        )


def cmd_calibrate(args: argparse.Namespace) -> None:
    """Time every rung of the view side by side, once, into OUT/calibration.json (run it on a quiet machine)."""
    specs = rung_specs(args.size, args.view, args.bpe_vocabs)
    split = corpus_split(args)
    rungs = [load_rung(spec, args, split) for spec in specs if not args.rungs or spec.name in args.rungs]
    result = calibrate(rungs, args)
    path = Path(args.out) / "calibration.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps({**saved, **result}, indent=1), encoding="utf-8")  # --rungs: the others kept
    os.replace(tmp, path)
    for name, c in result.items():
        print(
            f"{name:15s} {c['step_s'] * 1e3:8.1f} ms/step  {c['flops_per_step'] / c['step_s'] / 1e9:6.1f} GFLOP/s"
            f"  {c['bytes_per_step'] / c['step_s']:8.0f} bytes/s"
        )


def cmd_export(args: argparse.Namespace) -> None:
    """A trained rung's model as a stlm run folder (--to), for `stlm finetune`, `evaluate`, `generate`, `export`."""
    from stlm import checkpoint as ckpt_io
    from stlm import registry
    from stlm.errors import UserError
    from stlm.tokenizers import BPETokenizer, ByteTokenizer

    specs = {s.name: s for s in rung_specs(args.size, args.view, args.bpe_vocabs)}
    if args.rung not in specs or not args.to:
        sys.exit(f"pooling_ladder: export needs --rung (one of {', '.join(specs)}) and --to FOLDER")
    spec, state_path, to = specs[args.rung], Path(args.out) / args.rung / "state.pt", Path(args.to)
    if not state_path.is_file():
        sys.exit(f"pooling_ladder: {state_path} does not exist; train the rung first")
    try:
        ckpt_io.check_output(to, reads=[state_path.parent], what="--to")
    except UserError as exc:
        sys.exit(f"pooling_ladder: {exc}")
    if to.exists():  # a new folder only: an existing run is never written into
        sys.exit(f"pooling_ladder: --to {to} already exists; choose a new folder")
    tok = ByteTokenizer()
    if spec.bpe_vocab:
        tok_path = bpe_path(args, spec.bpe_vocab)
        if not tok_path.is_file():
            sys.exit(
                f"pooling_ladder: {tok_path} (the rung's tokenizer) does not exist; export from the --out it ran in"
            )
        tok = BPETokenizer.from_file(tok_path)
    model, saved = load_trained(spec, state_path, args)
    plan = saved["plan"]
    source = {
        "pooling_ladder": {
            "rung": spec.name,
            "step": saved["step"],
            "total_steps": plan["total_steps"],
            "lr": plan["lr"],
            "data": args.data,
        }
    }
    record = ckpt_io.RunRecord(registry.get_family(spec.family), spec.config, tok.to_dict(), {"source": source})
    with ckpt_io.run_lock(to):
        ckpt_io.write_run_config(to, record.to_dict())
        ckpt = ckpt_io.save_checkpoint(to, saved["step"], model=model, optimizer=None, config=record, state={}, keep=1)
    print(f"{spec.name} at step {saved['step']}/{plan['total_steps']} -> {ckpt}")


def load_trained(spec: RungSpec, state_path: Path, args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    """The rung's model with the weights of its saved state, and that state."""
    from stlm import registry

    model = registry.build_model(spec.family, spec.config)
    try:
        saved = torch.load(state_path, weights_only=True)  # plain tensors and containers: no pickle runs
        model.load_state_dict(saved["model"])  # strict: a state of another config is refused by name and shape
    except (RuntimeError, KeyError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.exit(f"pooling_ladder: {state_path} holds no {spec.name} model of --size {args.size}: {reason}")
    return model, saved


def cmd_overlap(args: argparse.Namespace) -> None:
    """Each trained rung's held-out BPB on the bytes inside a --window-byte passage that occurs verbatim
    in the training split, and on the rest (bench/verbatim.py): is a lead memorised repeats?"""
    from bench import verbatim
    from stlm.evaluation.bpb import target_nats

    out = Path(args.out)
    specs = [s for s in rung_specs(args.size, args.view, args.bpe_vocabs) if not args.rungs or s.name in args.rungs]
    specs = [s for s in specs if (out / s.name / "state.pt").is_file()]
    if not specs:
        sys.exit(f"pooling_ladder: no trained rung in {out} (of --rungs {','.join(args.rungs) or 'all'})")
    train_docs, val_docs = split = corpus_split(args)
    seen = verbatim.training_windows(train_docs, args.window)
    texts = dict(zip(("val", "wikitext"), held_out_texts(val_docs, args)))
    mask = {name: verbatim.masks(t, seen, args.window) for name, t in texts.items() if t is not None}
    rows = []
    for spec in specs:
        rung, (model, saved) = load_rung(spec, args, split), load_trained(spec, out / spec.name / "state.pt", args)
        lengths = np.asarray(rung.tokenizer.byte_lengths(), dtype=np.int64)
        row = {"rung": spec.name, "step": saved["step"]}
        for name, stream in (("val", rung.val), ("wikitext", rung.wiki)):
            if stream is None:
                continue
            nats = target_nats(
                model, stream, context=rung.seq_len, stride=max(1, round(rung.seq_len * args.eval_stride))
            )
            ids_bytes = lengths[stream]  # (N,) bytes each target stands for; the first id is context only
            ids_bytes[0] = 0
            row[name] = verbatim.split_bpb(verbatim.bytes_nats(nats.numpy(), ids_bytes), mask[name])
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    for name in mask:
        print(
            f"{name}: {mask[name].mean():.1%} of {mask[name].size:,} bytes lie in a {args.window}-byte passage of the training split"
        )
    parts = ("all", "repeated", "other")
    header = ("rung", "step", *(f"{n} {part}" for n in mask for part in parts))
    print_table(
        [header] + [(r["rung"], str(r["step"]), *(f"{r[n][p]:.4f}" for n in mask for p in parts)) for r in rows]
    )


def best_lr(out: Path, name: str) -> float | None:
    """The sweep's learning rate with the lowest final validation BPB, None before the sweep is complete."""
    path = out / "sweep" / f"{name}.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text(encoding="utf-8"))  # written by run_sweep once complete
    return float(min(results, key=lambda lr: results[lr]["val_bpb"]))


def cmd_all(args: argparse.Namespace) -> None:
    """The whole ladder, resumable: calibrate, sweep every rung, then train all rungs in round-robin pieces.

    Round-robin pieces (--minutes each) keep the rungs' curves advancing
    together, so a run stopped at any point still compares them over a common
    range of FLOPs. Run it again to continue; it ends when every rung is done.
    """
    out = Path(args.out)
    specs = rung_specs(args.size, args.view, args.bpe_vocabs)
    if not (out / "calibration.json").is_file():
        cmd_calibrate(args)
    if args.rungs:  # a share of the ladder: two processes with one thread each use 2 cores best
        unknown = set(args.rungs) - {spec.name for spec in specs}
        if unknown:
            sys.exit(f"pooling_ladder: unknown rung(s) {', '.join(sorted(unknown))}; see `plan`")
        specs = [spec for spec in specs if spec.name in args.rungs]
    split = corpus_split(args)
    rungs = {spec.name: load_rung(spec, args, split) for spec in specs}
    for name, rung in rungs.items():
        sweep = argparse.Namespace(
            **{**vars(args), "rung": name, "tflops": args.sweep_tflops, "curve_points": args.sweep_points}
        )
        while best_lr(out, name) is None:  # each sweep run in --minutes pieces too: a kill loses one piece
            run_sweep(rung, sweep)
    while True:
        pending = []
        for name, rung in rungs.items():
            lr = best_lr(out, name)
            summary = train_rung(rung, out / name, lr, args.tflops, args.minutes, args)
            print(json.dumps({**summary, "lr": lr}), flush=True)
            if not summary["done"]:
                pending.append(name)
        if not pending:
            break
    cmd_report(args)


def cmd_report(args: argparse.Namespace) -> None:
    curves = {
        spec.name: read_curve(Path(args.out) / spec.name) for spec in rung_specs(args.size, args.view, args.bpe_vocabs)
    }
    curves = {name: c for name, c in curves.items() if c}
    if not curves:
        raise SystemExit(f"no curves under {args.out}: run `train` first")
    calib_path = Path(args.out) / "calibration.json"
    if calib_path.is_file():  # the time axis from the latest calibration: rerun `calibrate` on a quiet machine
        calib = json.loads(calib_path.read_text(encoding="utf-8"))
        for name, c in curves.items():
            if name in calib:
                for p in c:
                    p["wall_s"] = p["step"] * calib[name]["step_s"]
    rows = [
        (
            "rung",
            "steps",
            "TFLOP",
            "calibrated min",
            "val BPB (end)",
            "WikiText-2 BPB (end)",
            "val BPB @ equal FLOPs",
            "val BPB @ equal time",
        )
    ]
    flops = min(c[-1]["flops"] for c in curves.values())
    wall = min(c[-1]["wall_s"] for c in curves.values())
    for name, c in curves.items():
        end, fl, wt = c[-1], at(c, "flops", flops), at(c, "wall_s", wall)
        rows.append(
            (
                name,
                str(end["step"]),
                f"{end['flops'] / 1e12:.1f}",
                f"{end['wall_s'] / 60:.1f}",
                f"{end['val_bpb']:.4f}",
                "-" if end.get("wikitext_bpb") is None else f"{end['wikitext_bpb']:.4f}",
                "-" if fl is None else f"{fl:.4f}",
                "-" if wt is None else f"{wt:.4f}",
            )
        )
    print(f"equal FLOPs at {flops / 1e12:.1f} TFLOP, equal calibrated time at {wall / 60:.1f} min")
    print_table(rows)
    for axis, end, unit, scale in (("flops", flops, "TFLOP", 1e12), ("wall_s", wall, "min", 60.0)):
        marks = [end * f for f in CURVE_MARKS]
        for key, label in HELD_OUT:
            print(f"{label} along the curves, at equal {'FLOPs' if axis == 'flops' else 'calibrated time'}")
            print_table(along_curves(curves, axis, marks, key, unit, scale))
    for key, label in HELD_OUT:
        print(f"where the curves cross ({label}, against training FLOPs)")
        print_table(crossing_rows(curves, key))
    print_sweeps(Path(args.out), list(curves))
    plot(curves, Path(args.out))


CURVE_MARKS = (0.125, 0.25, 0.5, 0.75, 1.0)  # fractions of the common range the along-curve tables read
HELD_OUT = (("val_bpb", "validation BPB"), ("wikitext_bpb", "WikiText-2 BPB"))  # curve keys and their names


def is_pooled(name: str) -> bool:
    """A pooled byte rung (the side of the comparison the report's lead and crossing rows are about)."""
    return name.startswith("pooled")


def along_curves(
    curves: dict[str, list[dict[str, Any]]], axis: str, marks: list[float], key: str, unit: str, scale: float
) -> list[tuple[str, ...]]:
    """Each rung's `key` at each mark of `axis` (interpolated), then the best pooled rung's lead over the rest.

    The last row is best-pooled minus best-other at each mark: negative means a pooled rung is ahead.
    """
    rows: list[tuple[str, ...]] = [("rung", *(f"@ {x / scale:.1f} {unit}" for x in marks))]
    values = {name: [at(c, axis, x, key) for x in marks] for name, c in curves.items()}
    for name, vals in values.items():
        rows.append((name, *("-" if v is None else f"{v:.4f}" for v in vals)))
    leads = []
    for i in range(len(marks)):
        pooled = [v[i] for n, v in values.items() if is_pooled(n) and v[i] is not None]
        others = [v[i] for n, v in values.items() if not is_pooled(n) and v[i] is not None]
        leads.append(f"{min(pooled) - min(others):+.4f}" if pooled and others else "-")
    rows.append(("best pooled - best other", *leads))
    return rows


def crossing(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str, axis: str = "flops") -> dict[str, Any]:
    """Where curve `a` passes below curve `b` for good, over their common range of `axis`.

    Both curves are piecewise linear between logged points, so their difference is linear
    between the union of those points and a sign change is located exactly. Returns the
    common range's end, a's lead there (a - b; negative = a lower) and `since`: the axis
    value from which a stays below b (the start of the range when it never was above),
    None when a is not below b at the end.
    """
    pa = [p[axis] for p in a if p.get(key) is not None]
    pb = [p[axis] for p in b if p.get(key) is not None]
    if not pa or not pb or max(pa[0], pb[0]) > min(pa[-1], pb[-1]):
        return {"end": None, "lead": None, "since": None}
    lo, hi = max(pa[0], pb[0]), min(pa[-1], pb[-1])
    grid = sorted({x for x in pa + pb if lo <= x <= hi})  # lo and hi are logged points themselves
    diff = [at(a, axis, x, key) - at(b, axis, x, key) for x in grid]
    since = None
    if diff[-1] < 0:
        since = grid[0]
        for i in range(len(grid) - 1, 0, -1):
            if diff[i - 1] >= 0:  # the last step from not-below to below: the crossing
                d0, d1 = diff[i - 1], diff[i]
                since = grid[i - 1] + (grid[i] - grid[i - 1]) * d0 / (d0 - d1)
                break
    return {"end": hi, "lead": diff[-1], "since": since}


def crossing_rows(curves: dict[str, list[dict[str, Any]]], key: str) -> list[tuple[str, ...]]:
    """Each pooled rung against each other rung: from how many TFLOP on it is ahead, and by how much at the end."""
    rows: list[tuple[str, ...]] = [("pooled rung", "against", "ahead from", "lead at the common end")]
    for p_name, p_curve in curves.items():
        if not is_pooled(p_name):
            continue
        for o_name, o_curve in curves.items():
            if is_pooled(o_name):
                continue
            c = crossing(p_curve, o_curve, key)
            if c["end"] is None:
                continue
            ahead = "not ahead" if c["since"] is None else f"{c['since'] / 1e12:.1f} TFLOP"
            rows.append((p_name, o_name, ahead, f"{c['lead']:+.4f} @ {c['end'] / 1e12:.1f} TFLOP"))
    return rows


def print_sweeps(out: Path, names: list[str]) -> None:
    """The learning-rate sweep of each rung: final validation BPB per rate, the chosen one starred."""
    sweeps = {
        n: json.loads((out / "sweep" / f"{n}.json").read_text())
        for n in names
        if (out / "sweep" / f"{n}.json").is_file()
    }
    if not sweeps:
        return
    lrs = sorted({lr for r in sweeps.values() for lr in r}, key=float)
    rows = [("rung", "sweep steps", *(f"lr {lr}" for lr in lrs))]
    for name, results in sweeps.items():
        chosen = best_lr(out, name)
        cells = []
        for lr in lrs:
            r = results.get(lr)
            bpb = "-" if r is None or r["val_bpb"] is None else f"{r['val_bpb']:.4f}"
            cells.append(bpb + (" *" if chosen is not None and float(lr) == chosen else ""))
        steps = {r["total_steps"] for r in results.values()}
        rows.append((name, "/".join(str(s) for s in sorted(steps)), *cells))
    print("learning-rate sweeps (final validation BPB of each short run; * = the rate the rung trains with)")
    print_table(rows)


def plot(curves: dict[str, list[dict[str, Any]]], out: Path) -> None:
    """Both held-out curves against FLOPs and against calibrated time: the whole run, then its last 7/8 zoomed."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    sets = (("val_bpb", "validation split"), ("wikitext_bpb", "WikiText-2 validation"))
    # One colour per rung, the same in every panel: tab20's ten strong hues first, then their light twins.
    palette = plt.get_cmap("tab20").colors
    colors = {name: palette[(2 * i) % 20 + (2 * i) // 20 % 2] for i, name in enumerate(curves)}
    for axis, label, scale in (("flops", "training TFLOPs", 1e12), ("wall_s", "calibrated training minutes", 60.0)):
        fig, axes = plt.subplots(2, 2, figsize=(12, 9))
        for col, (key, title) in enumerate(sets):
            series = {
                name: [(p[axis] / scale, p[key]) for p in c if p.get(key) is not None] for name, c in curves.items()
            }
            series = {name: points for name, points in series.items() if points}
            if not series:
                continue
            end = min(points[-1][0] for points in series.values())  # the common range of every curve
            for row, ax in enumerate(axes[:, col]):
                for name, points in series.items():
                    style = "--" if name.startswith("bpe") else ":" if name == "unpooled" else "-"
                    ax.plot(*zip(*points), style, marker="o", ms=3, label=name, color=colors[name])
                ax.set_xlabel(label)
                ax.set_ylabel("bits per byte")
                ax.grid(alpha=0.3)
                if row == 0:
                    ax.set_xscale("log")
                    ax.set_title(title)
                    ax.legend(fontsize=8)
                else:  # the last 7/8 of the common range, where the curves cross
                    tail = [y for points in series.values() for x, y in points if end / 8 <= x <= end]
                    if tail:
                        pad = 0.05 * (max(tail) - min(tail) or 1.0)
                        ax.set_xlim(end / 8, end * 1.02)
                        ax.set_ylim(min(tail) - pad, max(tail) + pad)
                    ax.set_title(f"{title}: the last 7/8 of the common range")
        fig.tight_layout()
        fig.savefig(out / f"ladder-{axis}.png", dpi=110)
        plt.close(fig)


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print(
            "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"
        )
        if n == 0:
            print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["plan", "calibrate", "sweep", "train", "all", "report", "export", "overlap"])
    p.add_argument("--size", choices=["tiny", "10m"], default="10m")
    p.add_argument("--view", choices=["equal-params", "equal-core", "variants", "all"], default="equal-params")
    p.add_argument("--rung", help="train, sweep, export: the rung")
    p.add_argument("--to", help="export: the new stlm run folder")
    p.add_argument(
        "--rungs",
        type=lambda text: tuple(text.split(",")),
        default=(),
        help="all, calibrate: only these rungs (comma-separated; default every rung of the view)",
    )
    p.add_argument(
        "--out", default="runs/ladder", help="one folder per rung (state.pt, curve.jsonl), plots, tokenizers"
    )
    p.add_argument("--data", default="offline-mix", help="training corpus (any --data spec)")
    p.add_argument("--cache-dir", help="download and token caches (default: the user cache)")
    p.add_argument("--wikitext", default="", help="WikiText-2 valid.txt ('' = data folder or Hub, 'none' = no curve)")
    p.add_argument(
        "--bpe-vocabs",
        type=lambda text: tuple(int(v) for v in text.split(",") if v),
        default=BPE_VOCABS,
        help="equal-params: BPE vocabulary sizes, one rung each (bpe-4k ...; '' for none)",
    )
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lrs", default="1e-3,2e-3,4e-3", help="sweep: learning rates")
    p.add_argument(
        "--tflops",
        type=float,
        default=240.0,
        help="the rung's training budget in TFLOPs (~30 min a rung on 2 quiet cores)",
    )
    p.add_argument("--sweep-tflops", type=float, default=12.0, help="all: each sweep run's budget in TFLOPs")
    p.add_argument("--minutes", type=float, default=9.0, help="stop this piece after so many minutes (resume later)")
    p.add_argument("--steps", type=int, default=0, help="the rung's training steps (0: from --tflops)")
    p.add_argument("--stop-at", type=int, default=0, help="stop this piece after that step (0: no limit)")
    p.add_argument("--seq-len", type=int, default=512, help="bytes per training window (BPE: the same text)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--val-bytes", type=int, default=131072, help="validation text scored per curve point")
    p.add_argument(
        "--eval-stride", type=float, default=0.5, help="validation windows advance by this fraction of the context"
    )
    p.add_argument("--curve-points", type=int, default=12)
    p.add_argument("--sweep-points", type=int, default=3, help="all: curve points of each sweep run")
    p.add_argument("--bpe-train-bytes", type=int, default=16 << 20, help="training text a BPE is fitted on")
    p.add_argument("--calib-steps", type=int, default=5)
    p.add_argument("--window", type=int, default=32, help="overlap: bytes a passage must share verbatim")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    commands = {
        "plan": cmd_plan,
        "calibrate": cmd_calibrate,
        "sweep": cmd_sweep,
        "train": cmd_train,
        "all": cmd_all,
        "report": cmd_report,
        "export": cmd_export,
        "overlap": cmd_overlap,
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()
