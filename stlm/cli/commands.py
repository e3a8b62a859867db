"""What each `stlm` subcommand runs: thin callers of the Python API (`stlm.api`) and library functions.

`stlm.cli.main` holds the table of subcommands and their flags; each function
here takes the parsed flags, calls into the library and prints the result.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time
from pathlib import Path
from typing import Any

from stlm.cli import flags, tables
from stlm.config import DataConfig
from stlm.errors import UserError


def cmd_models(args: argparse.Namespace) -> int:
    from stlm import registry

    if args.name:
        family, cfg = registry.resolve_model(args.name)
        tables.print_models([(args.name, family, cfg)], parts=args.parts)
        return 0
    presets = [p for p in registry.list_presets() if not args.family or p.family == args.family]
    if not presets:
        raise UserError(f"no presets in family {args.family!r}; families: {', '.join(sorted(registry.FAMILIES))}")
    tables.print_models([(p.name, registry.FAMILIES[p.family], p.config) for p in presets], parts=args.parts)
    print("\nAny t5-efficient-<size>[-nl|el|dl|dm|kv|nh|ff<N>]... name works too, e.g. t5-efficient-base-dl2.")
    return 0


def cmd_corpora(args: argparse.Namespace) -> int:
    from stlm.data import list_corpora

    tables.print_table([("corpus", "description")] + [(c.name, c.description) for c in list_corpora()])
    print("\nAlso accepted by --data: a text file, a directory of text files, a .jsonl file, or hf:NAME[:CONFIG].")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from stlm.data import prepare_data, unigram_bits_per_byte
    from stlm.tokenizers import ByteTokenizer, load_tokenizer

    d, tokenizer = DataConfig(**flags.given(args, "data")), load_tokenizer(args.tokenizer)
    data = prepare_data(
        d.source,
        tokenizer,
        cache_dir=d.cache_dir,
        val_fraction=d.val_fraction,
        seed=d.split_seed,
        text_field=d.text_field,
        workers=d.workers,
        streaming=d.streaming,
        max_documents=d.max_documents,
    )
    print(data.describe())
    if isinstance(tokenizer, ByteTokenizer):
        print(f"  order-0 (unigram) entropy of val: {unigram_bits_per_byte(data.val):.3f} bits per byte")
    return 0


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from stlm import checkpoint as ckpt_io
    from stlm.data import fit_bpe

    d = DataConfig(**flags.given(args, "data"))
    ckpt_io.check_output(args.out)
    fitted = fit_bpe(
        d.source,
        args.vocab_size,
        val_fraction=d.val_fraction,
        seed=d.split_seed,
        text_field=d.text_field,
        cache_dir=d.cache_dir,
        min_frequency=args.min_frequency,
    )
    tok, path = fitted.tokenizer, fitted.tokenizer.save(args.out)
    print(
        f"byte-level BPE, {tok.vocab_size} ids ({tok.n_pieces} pieces + PAD/BOS/EOS), trained on the "
        f"{fitted.n_documents:,} training documents ({fitted.n_bytes:,} bytes) of {d.source} -> {path}\n"
        f"use it with: --tokenizer bpe:{path}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from stlm import api
    from stlm import checkpoint as ckpt_io
    from stlm.training.loop import RESUME_NAMED_AGAIN, RESUME_SAFE_KEYS
    from stlm.training.report import data_flag

    settings = _settings(args, RESUME_SAFE_KEYS + RESUME_NAMED_AGAIN)
    if args.resume:
        run = api.train(resume=args.resume, stop_at=args.stop_at, progress=not args.quiet, **settings)
    else:
        if args.out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError("under torchrun pass --out RUN_DIR so every process writes to the same run")
        run = api.train(args.config, args.out, stop_at=args.stop_at, progress=not args.quiet, **settings)
    val = "".join(f", {k} {v:.4f}" for k, v in run.val.items() if k in ("val_bpb", "val_loss"))
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(f"step {run.step}{val}; checkpoint {run.checkpoint}")
        if run.interrupted:
            recorded = ckpt_io.read_record(run.dir / "config.json").sections.get("run", {})
            again = data_flag(str(recorded.get("data", {}).get("source", "")))
            print(f"stopped before the last step; continue with: stlm train --resume {run.dir}{again}", file=sys.stderr)
    return (130 if args.stop_at is None else 0) if run.interrupted else 0


def _settings(args: argparse.Namespace, resume_safe: tuple[str, ...]) -> dict[str, Any]:
    """The config keys the flags and --set give. With --resume, a UserError naming the first flag given
    for a setting outside `resume_safe`: a resumed run keeps its recorded settings, whatever their value."""
    settings = flags.overrides(args, args.settings)
    if args.resume:
        allowed = [args.settings[k] for k in resume_safe if k in args.settings]
        allowed += ["--stop-at", "--quiet"] if "stop_at" in args else ["--quiet"]
        refused = [f for f in ("--config", "--out") if getattr(args, f[2:]) is not None]
        refused += [args.settings[k] if k in args else f"--set {k}" for k in settings if k not in resume_safe]
        if refused:
            raise UserError(
                f"{refused[0]} cannot be used with --resume: a run resumes with its recorded settings "
                f"and folder; it may change only {', '.join(allowed)}"
            )
    return settings


def cmd_plot(args: argparse.Namespace) -> int:
    from stlm import checkpoint as ckpt_io
    from stlm.training.plot import plot_run

    if args.out is not None:
        ckpt_io.check_output(args.out, reads=[args.run])
    print(f"wrote {plot_run(args.run, args.out or args.run / 'curves.png')}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from stlm import api
    from stlm.finetune.loop import RESUME_SAFE_KEYS, TASK_FILES

    settings, progress = _settings(args, RESUME_SAFE_KEYS + tuple(f"task.{k}" for k in TASK_FILES)), not args.quiet
    if args.resume:
        run = api.fine_tune(resume=args.resume, progress=progress, **settings)
    else:
        run = api.fine_tune(args.config, args.out, progress=progress, **settings)
    tables.print_finetune(run.results)
    print(f"best checkpoint (step {run.best_step}): {run.checkpoint}\nresults: {run.dir / 'results.json'}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from collections import Counter

    from stlm import checkpoint as ckpt_io
    from stlm.finetune import classify

    out, source = args.out, args.input
    if out.resolve() == source.resolve() or (out.exists() and source.exists() and out.samefile(source)):
        raise UserError(f"--out {out} is the --input file; write the labels to another file")
    ckpt_io.check_output(out, reads=args.model)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name the JSONL file to write")
    if not args.model and args.bag_of_words is None:
        raise UserError("give at least one --model RUN (or --bag-of-words TRAIN with --bag-of-words-val VAL)")
    if (args.bag_of_words is None) != (args.bag_of_words_val is None):
        raise UserError("--bag-of-words and --bag-of-words-val go together: a training file and a validation file")
    bow_files = [args.bag_of_words, args.bag_of_words_val] if args.bag_of_words is not None else []
    weights = None
    if args.bag_of_words_weight is not None:
        w = args.bag_of_words_weight
        if not bow_files or not args.model:
            raise UserError(
                "--bag-of-words-weight weighs bag of words against the runs; give both --model and --bag-of-words"
            )
        if not 0.0 < w < 1.0:
            raise UserError(f"--bag-of-words-weight must be between 0 and 1 (exclusive), got {w:g}")
        weights = [(1.0 - w) / len(args.model)] * len(args.model) + [w]
    if any(f.resolve() == out.resolve() for f in bow_files):
        raise UserError(f"--out {out} is a bag-of-words file; write the labels to another file")
    rows, texts, where = classify.read_texts(source, args.field)
    runtime = flags.given(args, "runtime")
    runs = [classify.load_classifier(m, **runtime) for m in args.model]
    ckpt_io.check_output(out, reads=[p for c in runs for p in (c.path, ckpt_io.run_of(c.path)) if p is not None])
    bow = classify.fit_bag_of_words_member(*bow_files) if bow_files else None
    models: list[classify.Member] = [*runs, bow] if bow is not None else list(runs)
    labels = classify.check_same_labels(models)
    if any(c.direction == "channel" for c in runs):
        for text, at in zip(texts, where):
            if not text.strip():
                raise UserError(f"{at}: field {args.field!r} is empty; a channel classifier scores the input")
    if not args.quiet:
        share = f", weight {weights[-1]:g}" if weights else ""
        words = f" and bag of words (temperature {bow.temperature:g}{share})" if bow is not None else ""
        reads = ""
        if runs:  # say how texts longer than a run reads are treated
            size = min(c.input_bytes for c in runs)
            longer = sum(len(t.encode("utf-8")) > size for t in texts)
            if longer:
                how = f"in windows of {size} bytes" if args.windows else f"cut to {size} bytes (--windows reads all)"
                reads = f"; {longer} longer texts read {how}"
        print(
            f"stlm classify: {len(texts)} texts, {len(runs)} model(s){words}, labels {', '.join(labels)}{reads}",
            file=sys.stderr,
        )
    labels, probs = classify.classify_texts(
        models, texts, weights=weights, windows=args.windows, batch_size=args.batch_size, progress=not args.quiet
    )
    replaced = sum(1 for row in rows if "probs" in row or "label" in row)
    if replaced:
        print(
            f'note: {replaced} input rows had a "probs" or "label" field; the output\'s are the models\'',
            file=sys.stderr,
        )
    labelled = classify.labelled_rows(rows, labels, probs)
    out.parent.mkdir(parents=True, exist_ok=True)
    classify.write_jsonl_atomic(out, labelled)
    counts = Counter(row["label"] for row in labelled)
    shown = ", ".join(f"{label} {counts[label]}" for label in labels)
    print(f"labelled {len(labelled)} rows with {len(models)} model(s): {shown}; wrote {out}")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from stlm import api
    from stlm import checkpoint as ckpt_io

    run = api.average(args.models, args.out, args.weights)
    written = ckpt_io.read_record(run.checkpoint / "config.json").sections["source"]["weights"]
    shares = ", ".join(f"{w:.3g}" for w in written)
    print(f"averaged {len(args.models)} checkpoints (weights {shares}) -> {run.checkpoint}")
    return 0


def cmd_spin(args: argparse.Namespace) -> int:
    from stlm import api
    from stlm.finetune.loop import TASK_FILES
    from stlm.finetune.spin import RESUME_SAFE_KEYS

    settings, progress = _settings(args, RESUME_SAFE_KEYS + tuple(f"task.{k}" for k in TASK_FILES)), not args.quiet
    if args.resume:
        if args.run is not None:
            raise UserError("--resume continues a SPIN run with its recorded settings; pass no RUN with it")
        run = api.spin(resume=args.resume, stop_at=args.stop_at, progress=progress, **settings)
    else:
        if args.run is None:
            raise UserError("name the fine-tuned run to start from: stlm spin RUN (or --resume a SPIN run)")
        run = api.spin(args.run, args.out, stop_at=args.stop_at, progress=progress, **settings)
    if run.interrupted:
        print(f"checkpoint (step {run.step}): {run.checkpoint}")
        print(f"stopped before the last step; continue with: stlm spin --resume {run.dir}", file=sys.stderr)
        return 0
    tables.print_spin(run.results)
    print(f"checkpoint (step {run.step}): {run.checkpoint}\nresults: {run.dir / 'results.json'}")
    return 0


def cmd_selfplay(args: argparse.Namespace) -> int:
    from stlm.selfplay.loop import RESUME_SAFE_KEYS, SelfPlayConfig, selfplay

    settings, progress = _settings(args, RESUME_SAFE_KEYS), not args.quiet
    if args.resume:
        run = selfplay(None, args.resume, resume=True, overrides=settings, stop_at=args.stop_at, progress=progress)
    else:
        cfg = SelfPlayConfig().with_overrides(settings)
        out = args.out or Path("runs") / f"selfplay-{cfg.game}-{time.strftime('%Y%m%d-%H%M%S')}"
        run = selfplay(cfg, out, stop_at=args.stop_at, progress=progress)
    tables.print_selfplay(run.results)
    print(f"checkpoint (update {run.step}): {run.checkpoint}")
    if run.finished:
        print(f"learning curve: {run.out / 'curve.png'}\nresults: {run.out / 'results.json'}")
    else:
        print(f"stopped before the last update; continue with: stlm selfplay --resume {run.out}", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from stlm import api
    from stlm import checkpoint as ckpt_io
    from stlm.evaluation import tasks
    from stlm.evaluation.record import write_results

    names = args.task or ["bpb"]
    if args.json and len(names) > 1:
        raise UserError("--json takes one task's result; with several tasks use --out DIR")
    if args.json and args.json.is_dir():
        raise UserError(f"--json {args.json} is a folder; name the JSON file to write (or use --out DIR)")
    if args.out and args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; name a folder for the results")
    if args.context and args.stride and args.stride > args.context:
        raise UserError(f"--stride ({args.stride}) must be at most --context ({args.context})")
    tasks.check_limit(names, args.limit)  # every task, before the model loads or any task runs
    model = api.load(args.checkpoint, quantize=args.quantize, **flags.given(args, "runtime"))
    reads = [model.path, model.run_dir]
    if args.out is not None:
        ckpt_io.check_output(args.out, reads=reads)
    if args.json is not None:  # the markdown goes beside it
        ckpt_io.check_output(args.json, reads=reads, what="--json")
        ckpt_io.check_output(args.json.with_suffix(".md"), reads=reads, what="--json (its .md)")
    data_dir = args.data_dir
    if any(n in tasks.DATA_DIR_TASKS for n in names):
        data_dir = tasks.resolve_data_dir(args.data_dir, os.environ.get("STLM_DATA_DIR"), Path.cwd())
    ckpt = model.path
    # Beside the checkpoints (RUN/evals), never inside one: a checkpoint standing alone gets CKPT-evals next to it.
    default = model.run_dir / "evals" if ckpt_io.run_of(ckpt) else ckpt.parent / f"{ckpt.name}-evals"
    out_dir = args.out or default
    options = tasks.EvalOptions(
        data_dir=data_dir,
        limit=args.limit,
        file=args.file,
        corpus=args.data,
        cache_dir=args.cache_dir,
        split=args.split,
        context=args.context,
        stride=args.stride,
        max_ids=args.max_ids,
    )
    weights = "" if model.runtime.quantize == "none" else f"-{model.runtime.quantize}"  # int8 never overwrites fp32
    for name in names:
        result = model.evaluate(name, batch_size=args.batch_size, progress=not args.quiet, **vars(options))
        record, page = model.document(result)
        # Named by task, data, split, settings and step: two evaluations never overwrite each other.
        json_path, md_path = write_results(
            record, page, out_dir / f"{tasks.result_name(name, options, ckpt.name, model.config)}{weights}.json"
        )
        if args.json:
            write_results(record, page, args.json)
        print(f"{result.summary}; checkpoint {ckpt}\n\n{result.markdown}\n\nresults: {json_path} and {md_path.name}\n")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from stlm import api

    model = api.load(args.checkpoint, quantize=args.quantize, **flags.given(args, "runtime"))
    pieces = model.generate(
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        greedy=args.greedy,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        num_beams=args.num_beams,
        speculative=args.speculative,
        stream=True,
    )
    if not model.family.encoder_decoder:  # a decoder continues the prompt (bytes that are not UTF-8 shown as U+FFFD)
        sys.stdout.write(args.prompt.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    stats = model.speculative_stats
    if args.speculative and stats is not None:
        print(
            f"speculative: {stats.emitted} ids in {stats.rounds} rounds, mean accepted length "
            f"{stats.mean_accepted:.2f}, {stats.accepted}/{stats.drafted} drafts accepted",
            file=sys.stderr,
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from stlm import api, serve

    sock = serve.listen(args.host, args.port)  # before the model loads: a port in use fails at once
    with sock:
        model = api.load(args.checkpoint, quantize=args.quantize, **flags.given(args, "runtime"))
        limits = serve.Limits(max_prompt_tokens=args.max_prompt_tokens, max_tokens_limit=args.max_tokens_limit)
        settings = serve.ServeSettings(
            model_name=args.model_name or model.run_dir.name,
            limits=limits,
            max_batch=args.max_batch,
            queue_size=args.queue_size,
            api_key=args.api_key,
        )
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(
            f"serving {settings.model_name} ({model.family.name}) on http://{shown}:{port}/  (API at /v1)", flush=True
        )
        if not ipaddress.ip_address(host).is_loopback and args.api_key is None:
            print(
                f"stlm serve: warning: {host} is reachable from other machines and no --api-key is set", file=sys.stderr
            )
        serve.run(model, settings, sock, log_level=args.log_level)
    return 0


def cmd_hf_import(args: argparse.Namespace) -> int:
    from stlm import api

    print(f"imported {args.directory} -> {api.import_hf_t5(args.directory, args.out).checkpoint}")
    return 0


def cmd_hf_export(args: argparse.Namespace) -> int:
    from stlm import api

    out = api.export_hf_t5(args.checkpoint, args.out)
    print(f"exported {args.checkpoint} -> {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from stlm import api

    out = api.export(args.checkpoint, args.out, args.format, args.dtype)
    files = sorted(p.name for p in out.iterdir())
    print(f"exported {args.checkpoint} as {args.format} -> {out} ({', '.join(files)})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stlm.demo import run_demo

    out = args.out or Path("runs") / f"demo-{time_stamp()}"
    report = run_demo(
        out,
        model=args.model,
        data=args.data,
        steps=args.steps,
        cache_dir=args.cache_dir,
        tokenizer=args.tokenizer,
        **flags.given(args, "runtime"),
    )
    if report.interrupted:  # by a signal: the report says where it stopped and how to go on
        return 130
    return 0 if report.learned else 1


def time_stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
