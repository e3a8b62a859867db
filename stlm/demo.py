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
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stlm import registry
from stlm.config import DataConfig, OptimConfig, RunConfig, RuntimeConfig, TrainConfig
from stlm.data import fit_bpe, prepare_data, unigram_bits_per_byte
from stlm.evaluation.bpb import BPBResult, bits_per_byte
from stlm.tokenizers import ByteTokenizer
from stlm import checkpoint as ckpt_io
from stlm.training.loop import check_new_run_dir, train
from stlm.training.plot import plot_run
from stlm.runtime import resolve_runtime

DEMO_STEPS = 1200  # about 4 minutes for decoder-tiny on 2 CPU cores
SEQ_LEN = 256
EVAL_CONTEXT, EVAL_STRIDE = 256, 128
EVAL_MAX_IDS = 262_144  # validation ids scored in the final evaluation (about 256 KiB)
EVAL_MAX_BYTES = 262_144  # and at most this many bytes: a token model scores about the text a byte model does
TOKENIZER_FILE = "tokenizer.json"  # where a BPE trained for a token preset is saved in the run folder
PROMPT = "The "
UNIFORM_BPB = 8.0


@dataclass
class DemoReport:
    run_dir: Path
    val: BPBResult
    unigram_bpb: float  # order-0 entropy of the validation bytes
    token_unigram_bpb: float | None  # token models: order-0 entropy of the validation tokens, per byte
    sample: str
    learned: bool


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
    out: Path, *, model: str = "decoder-tiny", data: str = "pydocs", steps: int | None = None,
    device: str = "auto", cache_dir: str | None = None, tokenizer: str = "auto", threads: int = 0,
) -> DemoReport:
    cfg = demo_config(model, data, steps or DEMO_STEPS, device, cache_dir, tokenizer, threads)
    check_new_run_dir(out)
    cfg = fit_demo_tokenizer(cfg, out)
    t0 = time.perf_counter()
    result = train(cfg, out)
    train_s = time.perf_counter() - t0

    runtime = resolve_runtime(cfg.runtime)
    loaded = ckpt_io.load(result.checkpoint, runtime.device)
    net, ckpt = loaded.model, loaded.path
    tokenizer = loaded.tokenizer  # the one it trained with, byte or BPE
    is_bytes = isinstance(tokenizer, ByteTokenizer)
    prepared = prepare_data(
        data, tokenizer, cache_dir=cache_dir,
        val_fraction=cfg.data.val_fraction, seed=cfg.data.split_seed, progress=False,
    )
    lengths = tokenizer.byte_lengths()  # (V,) UTF-8 bytes per id
    head = np.asarray(prepared.val[:EVAL_MAX_IDS])
    val_stream = head[: int(np.searchsorted(np.cumsum(lengths[head]), EVAL_MAX_BYTES, side="right"))]
    max_ids = EVAL_MAX_IDS if len(val_stream) == len(head) else len(val_stream)  # what `stlm evaluate` is given
    scope = "the" if len(val_stream) == len(prepared.val) else "the first part of the"
    val = bits_per_byte(
        net, val_stream, context=EVAL_CONTEXT, stride=EVAL_STRIDE, batch_size=16,
        device=runtime.device, autocast=runtime.autocast(), progress=True, byte_lengths=lengths,
    )
    unigram = unigram_bits_per_byte(np.frombuffer(tokenizer.decode_bytes(val_stream), dtype=np.uint8))
    # A token model must also beat what token frequencies alone give (usually far below the byte unigram).
    token_unigram = None if is_bytes else unigram_bits_per_byte(val_stream, byte_lengths=lengths)
    floor = unigram if token_unigram is None else min(unigram, token_unigram)
    sample_ids = list(
        loaded.family.stream(net, loaded.family.prompt_ids(tokenizer, PROMPT), eos_id=tokenizer.eos_id,
                             max_new_tokens=300, temperature=0.8, top_k=40, seed=0)
    )
    sample = PROMPT + tokenizer.decode(sample_ids)
    token_baseline = {} if token_unigram is None else {"order-0 (tokens)": token_unigram}
    plot = plot_run(out, baselines={"order-0 (unigram)": unigram, **token_baseline, "uniform": UNIFORM_BPB})
    learned = val.bits_per_byte < floor and unigram < UNIFORM_BPB

    n_params = sum(p.numel() for p in {id(p): p for p in net.parameters()}.values())
    unit = "bytes" if is_bytes else "tokens"
    tokenizer_line = [] if is_bytes else [f"- tokenizer: {tokenizer.vocab_size} ids, `{cfg.data.tokenizer}`"]
    given = "" if cfg.data.tokenizer in ("auto", f"bpe:{out / TOKENIZER_FILE}") else f" --tokenizer {cfg.data.tokenizer}"
    lines = [
        f"# stlm demo: {model} on {data}",
        "",
        f"- model: `{model}`, {n_params:,} parameters",
        *tokenizer_line,
        f"- training: {result.step} steps x {cfg.train.batch_size} x {cfg.data.seq_len} {unit} "
        f"in {train_s / 60:.1f} min on {runtime.describe()}",
        f"- checkpoint: `{ckpt}`",
        "",
        f"## Validation bits per byte ({val.n_bytes:,} bytes: {scope} `{data}` validation split, "
        f"context {val.context}, stride {val.stride})",
        "",
        "| model | BPB |",
        "|---|---|",
        f"| uniform guess over 256 bytes | {UNIFORM_BPB:.3f} |",
        f"| order-0 (unigram) entropy of the same bytes | {unigram:.3f} |",
        *([] if token_unigram is None else [f"| order-0 (unigram) entropy of the same tokens, per byte | {token_unigram:.3f} |"]),
        f"| **{model}** | **{val.bits_per_byte:.3f}** |",
        "",
        f"Learned: **{'yes' if learned else 'NO'}** "
        f"({'below' if learned else 'not below'} the {'' if is_bytes else 'lower '}unigram baseline "
        f"by {floor - val.bits_per_byte:.3f} bits).",
        "",
        f"![loss curve]({plot.name})",
        "",
        "## Sample (temperature 0.8, top-k 40, seed 0)",
        "",
        "```text",
        sample,
        "```",
        "",
        "## Reproduce",
        "",
        "```bash",
        f"stlm demo --model {model} --data {data} --steps {result.step}{given}",
        f"stlm evaluate {out} --context {EVAL_CONTEXT} --stride {EVAL_STRIDE} --max-ids {max_ids}",
        f"stlm generate {out} --prompt {PROMPT!r} --temperature 0.8 --top-k 40 --seed 0",
        "```",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")

    files = "config.json, metrics.jsonl, loss.png, report.md, checkpoints/"
    if (out / TOKENIZER_FILE).is_file():
        files += f", {TOKENIZER_FILE}"
    rows = [("uniform guess", UNIFORM_BPB), ("order-0 (unigram)", unigram), *token_baseline.items()]
    table = "".join(f"  {label:<19} {bpb:.3f}\n" for label, bpb in rows)
    verdict = f"learned: below {'both' if len(rows) == 2 else 'all'} baselines" if learned else "DID NOT beat the baselines"
    print(
        f"\nvalidation bits per byte ({val.n_bytes:,} bytes, context {val.context}, stride {val.stride}):\n"
        f"{table}"
        f"  {model:<19} {val.bits_per_byte:.3f}   {verdict}\n"
        f"\nsample:\n{sample}\n\n"
        f"run folder {out}: {files}"
    )
    sys.stdout.flush()
    return DemoReport(
        run_dir=out, val=val, unigram_bpb=unigram, token_unigram_bpb=token_unigram, sample=sample, learned=learned
    )


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
        cfg.data.source, model_cfg.vocab_size, val_fraction=cfg.data.val_fraction, seed=cfg.data.split_seed,
        text_field=cfg.data.text_field, cache_dir=cfg.data.cache_dir,
    )
    path = fitted.tokenizer.save(out / TOKENIZER_FILE)
    print(
        f"tokenizer: byte-level BPE of {fitted.tokenizer.vocab_size} ids for {cfg.model}, trained on the "
        f"{fitted.n_documents:,} training documents ({fitted.n_bytes:,} bytes) of {cfg.data.source} -> {path}"
    )
    return replace(cfg, data=replace(cfg.data, tokenizer=f"bpe:{path}"))
