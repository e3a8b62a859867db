"""Bits-per-byte tasks: any UTF-8 text file, a corpus split, or WikiText-2.

The text is scored as one stream, BOS + its ids (bytes or BPE tokens), by `bpb.bits_per_byte` with
a sliding window; context and stride are always recorded. WikiText-2 is the
tokenized release as shipped (`<unk>` markers, spaces around punctuation), so
its numbers compare only with others measured on the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stlm.errors import UserError
from stlm.evaluation.base import EvalModel, EvalOptions, TaskResult, data_subdir
from stlm.evaluation.bpb import REFERENCE_LABELS, bits_per_byte, reference_bpb
from stlm.evaluation.hub import WIKITEXT2, WIKITEXT2_SPLITS, load_rows
from stlm.evaluation.record import markdown_table

WIKITEXT_FILES = {"val": "valid.txt", "test": "test.txt"}


def run_bpb(model: EvalModel, options: EvalOptions) -> TaskResult:
    """A text file (--file) or a split of a corpus (default: the training corpus's validation split)."""
    _check_byte_model(model)
    if options.file is not None:
        stream, label, files = file_stream(Path(options.file), model.tokenizer), str(options.file), [Path(options.file)]
    else:
        if options.split not in ("val", "train"):
            raise UserError(f"a corpus has splits 'val' and 'train', not {options.split!r}")
        run = model.config.get("run", {})
        corpus = corpus_of(options, model.config)
        _check_recorded_corpus(corpus, options)
        stream, label, files = (
            split_stream(corpus, options.split, run, model.tokenizer, cache_dir=options.cache_dir),
            f"{corpus}:{options.split}",
            [],
        )
    return _score("bpb", model, options, stream, label, files)


def run_text(model: EvalModel, options: EvalOptions, text: str) -> TaskResult:
    """A string, scored as --file scores a file's text (BOS + its ids)."""
    _check_byte_model(model)
    if not text:
        raise UserError("the text is empty; nothing to score")
    return _score("bpb", model, options, np.asarray(model.tokenizer.encode(text, bos=True), dtype=np.int64), "text", [])


def _check_recorded_corpus(corpus: str, options: EvalOptions) -> None:
    """A checkpoint names no file stlm reads: a local corpus it recorded must be named again by the user.

    Built-in corpora and hf: datasets are names, not paths, and are read as recorded.
    """
    from stlm.data import local_path

    if options.corpus is None and local_path(corpus) is not None:
        raise UserError(
            f"the checkpoint was trained on the local corpus {corpus}; stlm reads no path a checkpoint names: "
            f"pass --data {corpus} (or wherever it is now) to score its split, or --file"
        )


def corpus_of(options: EvalOptions, config: dict) -> str:
    """The corpus `bpb` scores without --file: --data, else the one the checkpoint was trained on."""
    return options.corpus or config.get("run", {}).get("data", {}).get("source", "pydocs")


def run_wikitext2(model: EvalModel, options: EvalOptions) -> TaskResult:
    _check_byte_model(model)
    if options.split not in WIKITEXT_FILES:
        raise UserError(
            f"wikitext2 has splits {', '.join(WIKITEXT_FILES)}, not {options.split!r} (it is never trained on)"
        )
    if options.data_dir is None:
        hub = load_rows(WIKITEXT2, WIKITEXT2_SPLITS[options.split], cache_dir=options.hf_cache_dir)
        # One row per line of the release, each with its own newline: joined, they are the file's text.
        text = "".join(str(row["text"]) for row in hub.rows)
        if not text.strip():
            raise UserError(f"{WIKITEXT2.repo} {WIKITEXT2_SPLITS[options.split]} has no text")
        stream = np.asarray(model.tokenizer.encode(text, bos=True), dtype=np.int64)
        label = f"wikitext-2 {WIKITEXT2_SPLITS[options.split]} ({WIKITEXT2.repo})"
        return _score("wikitext2", model, options, stream, label, hub.files)
    path = data_subdir(options, "wikitext-2") / WIKITEXT_FILES[options.split]
    return _score("wikitext2", model, options, file_stream(path, model.tokenizer), f"wikitext-2 {path.name}", [path])


def _score(
    task: str, model: EvalModel, options: EvalOptions, stream: np.ndarray, label: str, files: list[Path]
) -> TaskResult:
    if options.max_ids:
        stream = stream[: options.max_ids]
    context = options.context or model.config.get("run", {}).get("data", {}).get("seq_len") or 256
    stride = options.stride or max(1, context // 2)
    if not 1 <= stride <= context:
        raise UserError(f"--stride must be between 1 and --context ({context})")
    max_len = model.config.get("model_config", {}).get("max_seq_len", context)
    if context > max_len:
        raise UserError(f"--context {context} exceeds the model's max_seq_len {max_len}")
    result = bits_per_byte(
        model.model,
        stream,
        context=context,
        stride=stride,
        batch_size=model.batch_size,
        device=model.device,
        autocast=model.autocast() if model.autocast else None,
        progress=model.progress,
        byte_lengths=model.tokenizer.byte_lengths(),
    )
    # The same bytes without a model, as the demo prints them: the numbers the model must beat.
    references = reference_bpb(stream, model.tokenizer)
    table = markdown_table(
        ("text", "bits per byte", "bytes", "context", "stride"),
        [(label, f"{result.bits_per_byte:.4f}", f"{result.n_bytes:,}", context, stride)]
        + [(REFERENCE_LABELS[k], f"{v:.4f}", "", "", "") for k, v in sorted(references.items(), key=lambda kv: kv[1])],
        right=(1, 2, 3, 4),
    )
    beside = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in references.items())
    return TaskResult(
        task=task,
        metrics={"bits_per_byte": result.bits_per_byte},
        markdown=table,
        summary=f"{label}: {result.bits_per_byte:.4f} bits per byte over {result.n_bytes:,} bytes (context {context}, stride {stride}); "
        f"without a model: {beside}",
        data_files=files,
        settings={
            "text": label,
            "context": context,
            "stride": stride,
            "max_ids": options.max_ids,
            "batch_size": model.batch_size,
        },
        details={**result.to_dict(), "references": references},
    )


def _check_byte_model(model: EvalModel) -> None:
    if model.family.encoder_decoder:
        raise UserError(
            f"bits per byte is measured on causal models; this checkpoint is {model.family.name!r} "
            "(an encoder-decoder): use --task blimp, piqa or mc:PATH"
        )
    if not hasattr(model.tokenizer, "byte_lengths"):
        raise UserError(
            f"bits per byte needs each id's byte length, which the {getattr(model.tokenizer, 'name', '?')!r} "
            "tokenizer does not give; use a byte or BPE tokenizer"
        )


def file_stream(path: Path, tokenizer) -> np.ndarray:
    """BOS + the ids of a UTF-8 text file (bytes, or BPE tokens)."""
    if not path.is_file():
        raise UserError(f"text file {path} does not exist")
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path} is not UTF-8 text (invalid byte at offset {exc.start}); convert it to UTF-8 first"
        ) from None
    if not raw:
        raise UserError(f"{path} is empty; nothing to score")
    return np.asarray(tokenizer.encode(raw.decode("utf-8"), bos=True), dtype=np.int64)


def split_stream(corpus: str, split: str, run: dict, tokenizer, *, cache_dir: Path | None = None) -> np.ndarray:
    """A split of a corpus, packed as the training loop packs it (same split settings as the run).

    The token cache is the user's `cache_dir` (--cache-dir) or the user cache folder, never the
    cache_dir the checkpoint recorded: a checkpoint does not decide where stlm writes.
    """
    from stlm.data import prepare_data

    data_cfg = run.get("data", {})
    data = prepare_data(
        corpus,
        tokenizer,
        cache_dir=cache_dir,
        val_fraction=data_cfg.get("val_fraction", 0.05),
        seed=data_cfg.get("split_seed", 0),
        text_field=data_cfg.get("text_field", "text"),
        streaming=data_cfg.get("streaming", False),
        max_documents=data_cfg.get("max_documents", 0),
    )
    return data.val if split == "val" else data.train
