"""`stlm` command line: a thin table of subcommands onto importable functions.

User mistakes (`UserError`) print one line and exit 2; Ctrl-C exits 130.
Only this module reads argv and the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stlm.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"stlm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stlm {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `stlm generate ... | head`
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stlm", description="Super tiny language models: train, evaluate, generate.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list every model preset with its exact parameter count")
    p.add_argument("--family", help="only this family (decoder, pooled, t5)")
    p.add_argument("--parts", action="store_true", help="pooled models: parameters by part and what sharing saves")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("corpora", help="list the built-in corpora")
    p.set_defaults(func=cmd_corpora)

    p = sub.add_parser("prepare", help="tokenize a corpus into cached token shards and print its statistics")
    _data_flags(p)
    p.add_argument("--tokenizer", default="byte", help="byte (default), bpe:PATH/tokenizer.json, byt5 or spiece:PATH")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train-tokenizer", help="train a byte-level BPE tokenizer on a corpus's training split")
    _data_flags(p)
    p.add_argument("--vocab-size", type=int, required=True, help="ids in all, PAD/BOS/EOS included (e.g. 4096 for bpe-10m)")
    p.add_argument("--min-frequency", type=int, default=2, help="merge only pairs seen this often")
    p.add_argument("--out", type=Path, required=True, help="tokenizer.json to write; use it as --tokenizer bpe:PATH")
    p.set_defaults(func=cmd_train_tokenizer)

    p = sub.add_parser("train", aliases=["pretrain"], help="train or pretrain a model (or --resume a run)")
    p.add_argument("--config", type=Path, help="recipe file (.toml or .json); flags override it")
    p.add_argument("--model", help="preset name (see `stlm models`)")
    p.add_argument("--data", help="corpus name, text file, directory, .jsonl, or hf:NAME")
    p.add_argument("--text-field", help="field holding the text in JSONL / HF data")
    p.add_argument("--tokenizer", help="auto (from the model family), byte, byt5, spiece:PATH or bpe:PATH (tokenizer.json)")
    p.add_argument("--objective", choices=["next-token", "span-corruption"])
    p.add_argument("--seq-len", type=int, help="window length (span corruption: encoder input length)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--optimizer", choices=["adamw", "adamw-rms", "adafactor"])
    p.add_argument("--lr", type=float)
    p.add_argument("--schedule", choices=["cosine", "wsd", "constant", "inverse-sqrt"])
    p.add_argument("--warmup", type=int, dest="warmup_steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="fp16 uses a gradient scaler")
    p.add_argument("--threads", type=int)
    p.add_argument("--parallel", choices=["auto", "none", "ddp", "fsdp"], help="under torchrun: ddp (auto) or fsdp (sharded)")
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the model (slow start)")
    p.add_argument("--activation-checkpointing", action="store_const", const=True, help="recompute block activations in backward: less memory")
    p.add_argument("--tensorboard", action="store_const", const=True, help="also write TensorBoard events to RUN_DIR/tensorboard")
    p.add_argument("--workers", type=int, help="tokenizer processes for a new token cache (0: one per core)")
    p.add_argument("--streaming", action="store_const", const=True, help="hf:NAME data: read rows as they arrive")
    p.add_argument("--cache-dir", help="where token shards and downloads are cached")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any setting, e.g. optim.weight_decay=0.05")
    p.add_argument("--out", type=Path, help="run directory (default runs/<model>-<time>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run from its newest checkpoint")
    p.add_argument("--stop-at", type=int, metavar="STEP", help="stop (and checkpoint) after this step; resume later")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("plot", help="draw a run's loss and throughput curves to PNG")
    p.add_argument("run", type=Path, help="run directory (holds metrics.jsonl)")
    p.add_argument("--out", type=Path, help="PNG to write (default RUN/curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("finetune", help="fine-tune on a text-to-text task (built-in --task, or --train FILE)")
    p.add_argument("--config", type=Path, help="fine-tuning recipe (.toml or .json); flags override it")
    p.add_argument("--model", dest="init", help="preset name (random init) or a run / checkpoint directory to start from")
    p.add_argument("--task", choices=["docstring-summary", "docstring-topic"], help="built-in task from the stdlib docstrings")
    p.add_argument("--train", dest="train_file", help="training examples, .jsonl or .csv")
    p.add_argument("--val", dest="val_file", help="validation examples (default: split off --val-fraction of --train)")
    p.add_argument("--test", dest="test_file", help="test examples, scored once with the best checkpoint")
    p.add_argument("--kind", choices=["summarization", "qa", "classification"], help="task kind of --train data")
    p.add_argument("--input-field", help="field / column holding the input (default: input)")
    p.add_argument("--target-field", help="field / column holding the target (default: target)")
    p.add_argument("--context-field", help="qa: field holding the context (input becomes question + context)")
    p.add_argument("--labels", help="classification: comma-separated label set (default: the training targets)")
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--eval-examples", type=int, help="validation examples generated at each evaluation (0: all)")
    p.add_argument("--metric", help="what early stopping watches (default: rougeL, f1 or accuracy by kind)")
    p.add_argument("--patience", type=int, help="evaluations without improvement before stopping (0: never)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"])
    p.add_argument("--threads", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any setting, e.g. task.separator='\\n# '")
    p.add_argument("--out", type=Path, help="run directory (default runs/finetune-<task>-<time>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this fine-tuning run from its newest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="benchmark a checkpoint: bits per byte, WikiText-2, BLiMP, PIQA, multiple choice")
    p.add_argument("checkpoint", type=Path, help="run directory or checkpoints/step-N folder")
    p.add_argument("--task", action="append", metavar="TASK", help="bpb (default), wikitext2, blimp, piqa or mc:PATH; repeat for several")
    p.add_argument("--data-dir", type=Path, help="evaluation data folder (default: $STLM_DATA_DIR, else ../shared/data beside the repo)")
    p.add_argument("--limit", type=int, help="score only the first N items (BLiMP: per phenomenon)")
    p.add_argument("--data", help="bpb: corpus to score (default: the one the model was trained on)")
    p.add_argument("--split", choices=["val", "train", "test"], default="val", help="bpb: val or train; wikitext2: val or test")
    p.add_argument("--file", type=Path, help="bpb: score this UTF-8 text file instead of a corpus split")
    p.add_argument("--context", type=int, help="bpb: window length in ids (default: the training seq_len)")
    p.add_argument("--stride", type=int, help="bpb: window step (default: context / 2)")
    p.add_argument("--max-ids", type=int, help="bpb: score only the first N ids of the stream (bytes or BPE tokens, plus BOS/EOS)")
    p.add_argument("--batch-size", type=int, help="windows (bpb, default 8) or sentences (default 64) per forward pass")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default; 1 is fastest for tiny models on a busy machine)")
    p.add_argument("--out", type=Path, help="folder for the results, named by task, data, split and step: e.g. bpb-pydocs-val-step-N.json and .md (default: RUN/evals/)")
    p.add_argument("--json", type=Path, help="also write the JSON result here, and the markdown beside it (one task only)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("generate", help="sample text from a checkpoint, streamed to stdout")
    p.add_argument("checkpoint", type=Path, help="run directory or checkpoints/step-N folder")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--max-new-bytes", type=int, default=256, help="new tokens to generate (bytes for byte models)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely byte")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("hf-import", help="turn a Hugging Face T5 directory into an stlm checkpoint")
    p.add_argument("directory", type=Path, help="config.json + model.safetensors or pytorch_model.bin (+ spiece.model)")
    p.add_argument("--out", type=Path, required=True, help="run directory to create")
    p.set_defaults(func=cmd_hf_import)

    p = sub.add_parser("hf-export", help="write a T5 checkpoint in Hugging Face format (transformers loads it)")
    p.add_argument("checkpoint", type=Path, help="run directory or checkpoints/step-N folder")
    p.add_argument("--out", type=Path, required=True, help="directory to write config.json, model.safetensors (+ spiece.model)")
    p.set_defaults(func=cmd_hf_export)

    p = sub.add_parser("demo", help="the main job: train, evaluate and sample a small model on the embedded corpus")
    p.add_argument("--model", default="decoder-tiny")
    p.add_argument("--data", default="pydocs")
    p.add_argument("--steps", type=int, help="optimizer steps (default: sized for a few minutes on 2 CPU cores)")
    p.add_argument(
        "--tokenizer", default="auto",
        help="auto (bytes; for a token preset such as bpe-tiny, a BPE of its vocabulary trained on the training split "
        "into RUN/tokenizer.json), byte or bpe:PATH (tokenizer.json)",
    )
    p.add_argument("--out", type=Path, help="run directory (default runs/demo-<time>)")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir")
    p.set_defaults(func=cmd_demo)
    return parser


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="pydocs", help="corpus name, text file, directory, .jsonl, or hf:NAME")
    p.add_argument("--text-field", default="text")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--cache-dir")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes (0: one per core); same files either way")
    p.add_argument("--streaming", action="store_true", help="hf:NAME data: read rows as they arrive, no full download")
    p.add_argument("--max-documents", type=int, default=0, help="keep only the first N documents (0: all)")


# --- listing -----------------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from stlm import registry

    presets = [p for p in registry.list_presets() if not args.family or p.family == args.family]
    if not presets:
        raise UserError(f"no presets in family {args.family!r}; families: {', '.join(sorted(registry.FAMILIES))}")
    rows = [("preset", "family", "params", "fp32 MiB", "bf16 MiB", "shape")]
    for p in presets:
        shape = registry.FAMILIES[p.family].describe(p.config)
        rows.append((p.name, p.family, f"{p.n_params:,}", f"{p.n_params * 4 / 2**20:.1f}", f"{p.n_params * 2 / 2**20:.1f}", shape))
    _print_table(rows, right=(2, 3, 4))
    print("\nAny t5-efficient-<size>[-nl|el|dl|dm|kv|nh|ff<N>]... name works too, e.g. t5-efficient-base-dl2.")
    if args.parts:
        _print_parts([(p.name, b) for p in presets if (b := registry.FAMILIES[p.family].breakdown(p.config))])
    return 0


def _print_parts(breakdowns: list[tuple[str, dict]]) -> None:
    if not breakdowns:
        return
    parts = ("embeddings", "hash_tables", "local_encoder", "pooling", "core", "local_decoder", "head", "total")
    print("\nPooled byte models, parameters by part (hash tables are included in the total):")
    rows = [("preset",) + parts]
    options = ("tie_head", "share_ffn", "repeat_blocks")
    savings = [("preset", *options, "on, together")]
    for name, b in breakdowns:
        rows.append((name,) + tuple(f"{b[k]:,}" for k in parts))
        cells = [f"{o.setting}: {o.saves:,}" if o.on else f"off ({o.saves:,})" for o in (b["options"][k] for k in options)]
        savings.append((name, *cells, f"{b['together']:,}"))
    _print_table(rows, right=tuple(range(1, len(parts) + 1)))
    print(
        "\nWhat each sharing option removes: when on, against the same network without it; when off (in brackets),\n"
        "what switching it on would remove (repeat_blocks: x2, against an unrepeated core of the doubled depth);\n"
        "together: what the options that are on remove against an untied, unshared, unrepeated core of the same depth."
    )
    _print_table(savings, right=(1, 2, 3, 4))


def _print_table(rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def cmd_corpora(args: argparse.Namespace) -> int:
    from stlm.data import list_corpora

    rows = [("corpus", "description")] + [(c.name, c.description) for c in list_corpora()]
    _print_table(rows)
    print("\nAlso accepted by --data: a text file, a directory of text files, a .jsonl file, or hf:NAME[:CONFIG].")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from stlm.data import prepare_data, unigram_bits_per_byte
    from stlm.tokenizers import ByteTokenizer, load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    data = prepare_data(
        args.data,
        tokenizer,
        cache_dir=args.cache_dir,
        val_fraction=args.val_fraction,
        seed=args.split_seed,
        text_field=args.text_field,
        workers=args.workers,
        streaming=args.streaming,
        max_documents=args.max_documents,
    )
    print(f"token shards: {data.path}")
    for split in ("train", "val"):
        m = data.meta[split]
        print(
            f"  {split:5s} {m['documents']:>8,} documents {m['tokens']:>12,} tokens {m['bytes']:>12,} bytes "
            f"({m['bytes'] / max(m['tokens'], 1):.2f} bytes per token)"
        )
    if isinstance(tokenizer, ByteTokenizer):
        print(f"  order-0 (unigram) entropy of val: {unigram_bits_per_byte(data.val):.3f} bits per byte")
    return 0


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from stlm.data import fit_bpe

    fitted = fit_bpe(
        args.data, args.vocab_size, val_fraction=args.val_fraction, seed=args.split_seed,
        text_field=args.text_field, cache_dir=args.cache_dir, min_frequency=args.min_frequency,
    )
    tokenizer = fitted.tokenizer
    path = tokenizer.save(args.out)
    print(
        f"byte-level BPE, {tokenizer.vocab_size} ids ({tokenizer.n_pieces} pieces + PAD/BOS/EOS), trained on the "
        f"{fitted.n_documents:,} training documents ({fitted.n_bytes:,} bytes) of {args.data} -> {path}\n"
        f"use it with: --tokenizer bpe:{path}"
    )
    return 0


# --- training ----------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from stlm.config import RunConfig, load_run_config
    from stlm.training import loop

    if args.resume:
        result = loop.resume(args.resume, stop_at=args.stop_at, progress=not args.quiet)
    else:
        cfg = load_run_config(args.config) if args.config else RunConfig()
        cfg = cfg.with_overrides(_overrides(args))
        if args.out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError("under torchrun pass --out RUN_DIR so every process writes to the same run")
        out = args.out or Path("runs") / f"{cfg.model}-{_timestamp()}"
        result = loop.train(cfg, out, stop_at=args.stop_at, progress=not args.quiet)
    val = "".join(f", {k} {v:.4f}" for k, v in (result.val or {}).items() if k in ("val_bpb", "val_loss"))
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(f"step {result.step}{val}; checkpoint {result.checkpoint}")
        if result.interrupted:
            print(f"stopped before the last step; continue with: stlm train --resume {result.run_dir}", file=sys.stderr)
    if result.interrupted:
        return 130 if args.stop_at is None else 0
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    flags = {
        "model": "model",
        "data": "data.source",
        "text_field": "data.text_field",
        "tokenizer": "data.tokenizer",
        "objective": "objective.name",
        "optimizer": "optim.name",
        "seq_len": "data.seq_len",
        "cache_dir": "data.cache_dir",
        "steps": "train.steps",
        "batch_size": "train.batch_size",
        "grad_accum": "train.grad_accum",
        "seed": "train.seed",
        "eval_every": "train.eval_every",
        "save_every": "train.save_every",
        "lr": "optim.lr",
        "schedule": "optim.schedule",
        "warmup_steps": "optim.warmup_steps",
        "device": "runtime.device",
        "precision": "runtime.precision",
        "threads": "runtime.threads",
        "parallel": "runtime.parallel",
        "compile": "runtime.compile",
        "activation_checkpointing": "runtime.activation_checkpointing",
        "tensorboard": "train.tensorboard",
        "workers": "data.workers",
        "streaming": "data.streaming",
    }
    return _flag_overrides(args, flags)


def _flag_overrides(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, object]:
    """Dotted config keys from the flags that were given, then every --set KEY=VALUE."""
    overrides: dict[str, object] = {key: getattr(args, attr) for attr, key in flags.items() if getattr(args, attr) is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def _timestamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def cmd_plot(args: argparse.Namespace) -> int:
    from stlm.training.plot import plot_run

    out = plot_run(args.run, args.out or args.run / "curves.png")
    print(f"wrote {out}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from stlm.finetune.config import FinetuneConfig, load_finetune_config
    from stlm.finetune.loop import finetune

    if args.resume:
        result = finetune(FinetuneConfig(), args.resume, resume=True, progress=not args.quiet)
    else:
        cfg = load_finetune_config(args.config) if args.config else FinetuneConfig()
        overrides = _finetune_overrides(args)
        if args.train_file:
            overrides.setdefault("task.name", "")
        elif args.task:
            overrides.setdefault("task.train_file", None)
        cfg = cfg.with_overrides(overrides)
        out = args.out or Path("runs") / f"finetune-{cfg.task.name or 'data'}-{_timestamp()}"
        result = finetune(cfg, out, progress=not args.quiet)
    _print_finetune(result.results)
    print(f"best checkpoint (step {result.best_step}): {result.best_checkpoint}\nresults: {result.out / 'results.json'}")
    return 0


def _finetune_overrides(args: argparse.Namespace) -> dict[str, object]:
    flags = {
        "init": "init", "task": "task.name", "train_file": "task.train_file", "val_file": "task.val_file",
        "test_file": "task.test_file", "kind": "task.kind", "input_field": "task.input_field",
        "target_field": "task.target_field", "context_field": "task.context_field", "labels": "task.labels",
        "val_fraction": "task.val_fraction", "steps": "train.steps", "batch_size": "train.batch_size",
        "lr": "optim.lr", "eval_every": "train.eval_every", "eval_examples": "train.eval_examples",
        "metric": "train.metric", "patience": "train.patience", "seed": "train.seed",
        "device": "runtime.device", "precision": "runtime.precision", "threads": "runtime.threads",
    }
    return _flag_overrides(args, flags)


def _print_finetune(results: dict) -> None:
    """Starting model, fine-tuned model and baselines side by side on the final split."""
    rows = [("model", *_FT_KEYS[results["kind"]])]
    for name, scores in [("starting model", results["initial"]), ("fine-tuned (best)", results["finetuned"])] + [
        (f"baseline: {k}", v) for k, v in results["baselines"].items()
    ]:
        if scores:
            rows.append((name, *(f"{scores[k]:.4f}" if k in scores else "-" for k in _FT_KEYS[results["kind"]])))
    print(f"{results['task']} ({results['kind']}), scored on {results['scored_on']} ({results['finetuned']['examples']} examples):")
    _print_table(rows, right=tuple(range(1, len(rows[0]))))


_FT_KEYS = {
    "summarization": ("rouge1", "rouge2", "rougeL", "loss"),
    "qa": ("exact_match", "f1", "loss"),
    "classification": ("accuracy", "accuracy_logprob", "loss"),
}


# --- evaluation and generation -----------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    import os

    from stlm.config import RuntimeConfig
    from stlm.evaluation import tasks
    from stlm.evaluation.record import provenance, write_results
    from stlm.checkpoint import load
    from stlm.runtime import resolve_runtime

    names = args.task or ["bpb"]
    if args.json and len(names) > 1:
        raise UserError("--json takes one task's result; with several tasks use --out DIR")
    runtime = resolve_runtime(RuntimeConfig(device=args.device, threads=args.threads))
    loaded = load(args.checkpoint, runtime.device)
    model, config, ckpt = loaded.model, loaded.record.to_dict(), loaded.path
    needs_data_dir = any(n in tasks.DATA_DIR_TASKS for n in names)
    options = tasks.EvalOptions(
        data_dir=tasks.resolve_data_dir(args.data_dir, os.environ.get("STLM_DATA_DIR"), Path.cwd()) if needs_data_dir else args.data_dir,
        limit=args.limit, file=args.file, corpus=args.data, split=args.split,
        context=args.context, stride=args.stride, max_ids=args.max_ids,
    )
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt
    out_dir = args.out or run_dir / "evals"
    for name in names:
        eval_model = tasks.EvalModel(
            model, loaded.tokenizer, loaded.family, config,
            device=runtime.device, autocast=runtime.autocast,
            batch_size=tasks.default_batch_size(name) if args.batch_size is None else args.batch_size,
            progress=not args.quiet,
        )
        if eval_model.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        result = tasks.run_task(name, eval_model, options)
        prov = provenance(
            model=model, config=config, checkpoint=ckpt, data_files=result.data_files,
            settings=result.settings, device=runtime.describe(),
        )
        record, page = result.document(prov)
        json_path, md_path = write_results(record, page, out_dir / f"{tasks.result_name(name, options, ckpt.name, config)}.json")
        if args.json:
            write_results(record, page, args.json)
        print(f"{result.summary}; checkpoint {ckpt}\n\n{result.markdown}\n\nresults: {json_path} and {md_path.name}\n")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import codecs

    from stlm.checkpoint import load
    from stlm.config import RuntimeConfig
    from stlm.runtime import resolve_runtime

    if args.max_new_bytes < 1:
        raise UserError("--max-new-bytes must be at least 1")
    runtime = resolve_runtime(RuntimeConfig(device=args.device))
    loaded = load(args.checkpoint, runtime.device)
    family, tokenizer = loaded.family, loaded.tokenizer
    # A decoder continues BOS + prompt; an encoder-decoder reads prompt + EOS and writes anew.
    prompt = family.prompt_ids(tokenizer, args.prompt)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = sys.stdout
    if not family.encoder_decoder:
        out.write(args.prompt)
    try:
        for token in family.stream(
            loaded.model, prompt, eos_id=tokenizer.eos_id, max_new_tokens=args.max_new_bytes,
            temperature=0.0 if args.greedy else args.temperature,
            top_k=args.top_k, top_p=args.top_p, seed=args.seed,
        ):
            out.write(decoder.decode(tokenizer.decode_bytes([token])))
            out.flush()
    except ValueError as exc:  # bad sampling settings, prompt longer than the context
        raise UserError(str(exc)) from None
    out.write(decoder.decode(b"", final=True) + "\n")
    return 0


def cmd_hf_import(args: argparse.Namespace) -> int:
    import shutil

    from stlm import registry
    from stlm.interop.hf_t5 import load_hf_t5
    from stlm import checkpoint as ckpt_io

    if ckpt_io.list_checkpoints(args.out):
        raise UserError(f"{args.out} already holds checkpoints; choose another --out")
    model, cfg, spiece = load_hf_t5(args.directory)
    args.out.mkdir(parents=True, exist_ok=True)
    if spiece is not None:
        shutil.copyfile(spiece, args.out / "spiece.model")
        tokenizer = {"name": "spiece", "spec": f"spiece:{(args.out / 'spiece.model').resolve()}"}
    else:
        tokenizer = {"name": "byt5"} if cfg.vocab_size < 1024 else {"name": "none", "note": "no spiece.model found"}
    config = ckpt_io.RunRecord(
        registry.get_family("t5"), cfg, tokenizer, {"source": {"hf_directory": str(args.directory.resolve())}}
    )
    ckpt = ckpt_io.save_checkpoint(args.out, 0, model=model, optimizer=None, config=config, state={}, keep=1)
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    print(f"imported {args.directory} ({n_params:,} parameters) -> {ckpt}")
    return 0


def cmd_hf_export(args: argparse.Namespace) -> int:
    from stlm.models.t5 import T5Model

    from stlm.checkpoint import load
    from stlm.interop.hf_t5 import export_hf_t5

    loaded = load(args.checkpoint)
    model, ckpt = loaded.model, loaded.path
    if not isinstance(model, T5Model):
        raise UserError(f"{ckpt} is not a T5 checkpoint; only T5 models export to Hugging Face format")
    spec = loaded.record.tokenizer.get("spec", "")
    spiece = spec.partition(":")[2] if spec.startswith("spiece:") else None
    out = export_hf_t5(model, args.out, spiece=spiece)
    print(f"exported {ckpt} -> {out} (config.json, model.safetensors{', spiece.model' if spiece else ''})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stlm.demo import run_demo

    out = args.out or Path("runs") / f"demo-{_timestamp()}"
    report = run_demo(
        out, model=args.model, data=args.data, steps=args.steps, device=args.device, cache_dir=args.cache_dir,
        tokenizer=args.tokenizer,
    )
    if report.interrupted:  # by a signal: the report says where it stopped and how to go on
        return 130
    return 0 if report.learned else 1


if __name__ == "__main__":
    raise SystemExit(main())
