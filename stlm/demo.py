"""The main job: train a small byte model on the embedded corpus, measure it, sample it.

`stlm demo` (what `make demo` runs) needs no network and a few minutes on two
CPU cores. It proves the model learned by printing its validation bits per
byte beside two baselines on the same text: a uniform guess over 256 bytes
(8.0) and the order-0 entropy of the validation bytes themselves (the best any
unigram byte model can do on them).

Token presets (bpe-tiny, bpe-10m) run the same way: unless a tokenizer is
given, a byte-level BPE of the preset's vocabulary is first trained on the
demo's training split and saved as RUN/tokenizer.json. Their bits per byte
count each token's exact UTF-8 bytes, so the numbers compare with byte models.

Stopped by a signal (Ctrl-C, SIGTERM), the demo saves, skips the evaluation,
the sample and the verdict, writes a report that says where it stopped and
how to resume and re-evaluate, and the CLI exits 130.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stlm import checkpoint as ckpt_io
from stlm import registry
from stlm.config import DataConfig, OptimConfig, RunConfig, RuntimeConfig, TrainConfig
from stlm.data import fit_bpe, prepare_data
from stlm.evaluation.bpb import UNIFORM_BPB, BPBResult, bits_per_byte, reference_bpb
from stlm.runtime import resolve_runtime
from stlm.tokenizers import ByteTokenizer
from stlm.training.loop import TrainResult, check_new_run_dir, train
from stlm.training.report import REPORT, Validation, data_flag, draw_plot, run_data, run_report

DEMO_STEPS = 1200  # about 4 minutes for decoder-tiny on 2 CPU cores
SEQ_LEN = 256
EVAL_CONTEXT, EVAL_STRIDE = 256, 128
EVAL_MAX_IDS = 262_144  # validation ids scored in the final evaluation (about 256 KiB)
EVAL_MAX_BYTES = 262_144  # and at most this many bytes: a token model scores about the text a byte model does
TOKENIZER_FILE = "tokenizer.json"  # where a BPE trained for a token preset is saved in the run folder
PROMPT = "The "


@dataclass
class DemoReport:
    run_dir: Path
    val: BPBResult | None  # None when interrupted: a stopped demo is not evaluated
    unigram_bpb: float | None  # order-0 entropy of the validation bytes
    token_unigram_bpb: float | None  # token models: order-0 entropy of the validation tokens, per byte
    sample: str
    learned: bool
    interrupted: bool = False  # stopped by a signal before its last step (the CLI exits 130)
    step: int = 0


def demo_config(
    model: str, data: str, steps: int, device: str, cache_dir: str | None, tokenizer: str = "auto", threads: int = 0
) -> RunConfig:
    return RunConfig(
        model=model,
        data=DataConfig(source=data, seq_len=SEQ_LEN, cache_dir=cache_dir, tokenizer=tokenizer),
        optim=OptimConfig(lr=3e-3, warmup_steps=min(100, steps // 10), schedule="cosine", min_lr_ratio=0.1),
        train=TrainConfig(
            steps=steps, batch_size=16, eval_every=max(1, steps // 6), eval_tokens=32_768, save_every=0, log_every=10
        ),
        runtime=RuntimeConfig(device=device, threads=threads),
    )


def run_demo(
    out: Path,
    *,
    model: str = "decoder-tiny",
    data: str = "pydocs",
    steps: int | None = None,
    device: str = "auto",
    cache_dir: str | None = None,
    tokenizer: str = "auto",
    threads: int = 0,
) -> DemoReport:
    cfg = demo_config(model, data, steps or DEMO_STEPS, device, cache_dir, tokenizer, threads)
    ckpt_io.check_output(Path(out))
    with ckpt_io.run_lock(Path(out)):  # train() inside takes it again (re-entrant)
        return _run_demo(cfg, Path(out), model, data, cache_dir)


def _run_demo(cfg: RunConfig, out: Path, model: str, data: str, cache_dir: str | None) -> DemoReport:
    check_new_run_dir(out)
    cfg = fit_demo_tokenizer(cfg, out)
    given = (
        "" if cfg.data.tokenizer in ("auto", f"bpe:{out / TOKENIZER_FILE}") else f" --tokenizer {cfg.data.tokenizer}"
    )
    demo_command = f"stlm demo --model {model} --data {data} --steps {cfg.train.steps}{given}"
    result = train(cfg, out)  # also writes the training run's report.md, which the demo's replaces
    if result.interrupted:
        return _interrupted(cfg, result, demo_command)

    runtime = resolve_runtime(cfg.runtime)
    loaded = ckpt_io.load(result.checkpoint, runtime.device)
    net = loaded.model
    tokenizer = loaded.tokenizer  # the one it trained with, byte or BPE
    is_bytes = isinstance(tokenizer, ByteTokenizer)
    prepared = prepare_data(
        data,
        tokenizer,
        cache_dir=cache_dir,
        val_fraction=cfg.data.val_fraction,
        seed=cfg.data.split_seed,
        progress=False,
    )
    val_stream, max_ids = eval_stream(prepared.val, tokenizer)
    scope = "the" if len(val_stream) == len(prepared.val) else "the first part of the"
    val = bits_per_byte(
        net,
        val_stream,
        context=EVAL_CONTEXT,
        stride=EVAL_STRIDE,
        batch_size=16,
        device=runtime.device,
        autocast=runtime.autocast(),
        progress=True,
        byte_lengths=tokenizer.byte_lengths(),
    )
    # A token model must also beat what token frequencies alone give (usually far below the byte unigram).
    references = reference_bpb(val_stream, tokenizer)
    unigram, token_unigram = references["unigram"], references.get("token_unigram")
    floor = unigram if token_unigram is None else min(unigram, token_unigram)
    sample_ids = list(
        loaded.family.stream(
            net,
            loaded.family.prompt_ids(tokenizer, PROMPT),
            eos_id=tokenizer.eos_id,
            max_new_tokens=300,
            temperature=0.8,
            top_k=40,
            seed=0,
        )
    )
    sample = PROMPT + tokenizer.decode(sample_ids)
    learned = val.bits_per_byte < floor and unigram < UNIFORM_BPB

    report = replace(
        run_report(result),
        title=f"stlm demo: {model} on {data}",
        validation=Validation(
            val.bits_per_byte,
            "bpb",
            val.n_bytes,
            f"{scope} `{data}` validation split",
            context=val.context,
            stride=val.stride,
            references=references,
        ),
        verdict=f"Learned: **{'yes' if learned else 'NO'}** "
        f"({'below' if learned else 'not below'} the {'' if is_bytes else 'lower '}unigram baseline "
        f"by {floor - val.bits_per_byte:.3f} bits).",
        sample=("temperature 0.8, top-k 40, seed 0", sample),
        reproduce=[
            demo_command,
            f"stlm evaluate {out} --context {EVAL_CONTEXT} --stride {EVAL_STRIDE} --max-ids {max_ids}",
            f"stlm generate {out} --prompt {PROMPT!r} --temperature 0.8 --top-k 40 --seed 0",
        ],
    )
    report.plot = draw_plot(out, references)
    report.write()

    token_baseline = {} if token_unigram is None else {"order-0 (tokens)": token_unigram}
    rows = [("uniform guess", UNIFORM_BPB), ("order-0 (unigram)", unigram), *token_baseline.items()]
    table = "".join(f"  {label:<19} {bpb:.3f}\n" for label, bpb in rows)
    verdict = (
        f"learned: below {'both' if len(rows) == 2 else 'all'} baselines" if learned else "DID NOT beat the baselines"
    )
    print(
        f"\nvalidation bits per byte ({val.n_bytes:,} bytes, context {val.context}, stride {val.stride}):\n"
        f"{table}"
        f"  {model:<19} {val.bits_per_byte:.3f}   {verdict}\n"
        f"\nsample:\n{sample}\n\n"
        f"run folder {out}: {_files(out)}"
    )
    sys.stdout.flush()
    return DemoReport(
        run_dir=out,
        val=val,
        unigram_bpb=unigram,
        token_unigram_bpb=token_unigram,
        sample=sample,
        learned=learned,
        step=result.step,
    )


def eval_stream(val: np.ndarray, tokenizer) -> tuple[np.ndarray, int]:
    """The validation ids the demo scores, and the --max-ids that makes `stlm evaluate` score the same.

    At most EVAL_MAX_IDS ids and EVAL_MAX_BYTES bytes: a token model scores
    about the text a byte model does.
    """
    lengths = tokenizer.byte_lengths()  # (V,) UTF-8 bytes per id
    head = np.asarray(val[:EVAL_MAX_IDS])
    stream = head[: int(np.searchsorted(np.cumsum(lengths[head]), EVAL_MAX_BYTES, side="right"))]
    return stream, EVAL_MAX_IDS if len(stream) == len(head) else len(stream)


def _interrupted(cfg: RunConfig, result: TrainResult, demo_command: str) -> DemoReport:
    """A demo stopped by a signal: no evaluation, no sample, no verdict; a report that says so, and how to go on."""
    out = result.run_dir
    record = ckpt_io.read_record(out / "config.json")
    tokenizer = record.load_tokenizer()
    data = run_data(
        record, tokenizer, cfg.data.cache_dir
    )  # the cached token files: no corpus to read again on the way out
    evaluate = f"stlm evaluate {out} --context {EVAL_CONTEXT} --stride {EVAL_STRIDE}"
    if data is not None:
        evaluate += f" --max-ids {eval_stream(data.val, tokenizer)[1]}"
    again = data_flag(cfg.data.source)
    evaluate += again
    report = replace(
        run_report(result, stopped="interrupted by a signal"),
        title=f"stlm demo: {cfg.model} on {cfg.data.source} (interrupted)",
        reproduce=[demo_command],
        continue_with=[
            f"stlm train --resume {out}{again}   # the remaining {cfg.train.steps - result.step:,} steps, exactly as if never stopped",
            f"{evaluate}   # then the demo's evaluation",
        ],
    )
    report.plot = draw_plot(out, report.validation.references if report.validation else {})
    report.write()
    print(
        f"\ndemo interrupted at step {result.step} of {cfg.train.steps}: not evaluated, no sample, no verdict.\n"
        f"checkpoint {result.checkpoint}; report {out / REPORT}\n"
        f"continue with: stlm train --resume {out}{again}\nthen evaluate: {evaluate}",
        file=sys.stderr,
    )
    return DemoReport(
        run_dir=out,
        val=None,
        unigram_bpb=None,
        token_unigram_bpb=None,
        sample="",
        learned=False,
        interrupted=True,
        step=result.step,
    )


def _files(out: Path) -> str:
    files = "config.json, metrics.jsonl, loss.png, report.md, checkpoints/"
    if (out / TOKENIZER_FILE).is_file():
        files += f", {TOKENIZER_FILE}"
    return files


def fit_demo_tokenizer(cfg: RunConfig, out: Path) -> RunConfig:
    """The config to train with: for a token preset and tokenizer "auto", a BPE of its vocabulary.

    The BPE is trained on the same training split the model will see and saved
    as RUN/tokenizer.json; any other config (a byte preset, a given tokenizer)
    is returned unchanged and checked by the training loop.
    """
    family, model_cfg = registry.resolve_model(cfg.model)
    if cfg.data.tokenizer != "auto" or family.bpe_vocab_size(model_cfg) is None:
        return cfg
    fitted = fit_bpe(
        cfg.data.source,
        model_cfg.vocab_size,
        val_fraction=cfg.data.val_fraction,
        seed=cfg.data.split_seed,
        text_field=cfg.data.text_field,
        cache_dir=cfg.data.cache_dir,
    )
    path = fitted.tokenizer.save(out / TOKENIZER_FILE)
    print(
        f"tokenizer: byte-level BPE of {fitted.tokenizer.vocab_size} ids for {cfg.model}, trained on the "
        f"{fitted.n_documents:,} training documents ({fitted.n_bytes:,} bytes) of {cfg.data.source} -> {path}"
    )
    return replace(cfg, data=replace(cfg.data, tokenizer=f"bpe:{path}"))
