"""The main job: train a small byte model on the embedded corpus, measure it, sample it.

`stlm demo` (what `make demo` runs) needs no network and a few minutes on two
CPU cores. It proves the model learned by printing its validation bits per
byte beside two baselines on the same text: a uniform guess over 256 bytes
(8.0) and the order-0 entropy of the validation bytes themselves (the best any
unigram byte model can do on them).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from stlm.config import DataConfig, OptimConfig, RunConfig, RuntimeConfig, TrainConfig
from stlm.data import prepare_data, unigram_bits_per_byte
from stlm.evaluation.bpb import BPBResult, bits_per_byte
from stlm.generation import stream
from stlm.tokenizers import ByteTokenizer
from stlm.training import checkpoint as ckpt_io
from stlm.training.loop import train
from stlm.training.plot import plot_run
from stlm.training.runtime import resolve_runtime

DEMO_STEPS = 1200  # about 4 minutes for decoder-tiny on 2 CPU cores
SEQ_LEN = 256
EVAL_CONTEXT, EVAL_STRIDE = 256, 128
EVAL_MAX_IDS = 262_144  # validation ids scored in the final evaluation (about 256 KiB)
PROMPT = "The "
UNIFORM_BPB = 8.0


@dataclass
class DemoReport:
    run_dir: Path
    val: BPBResult
    unigram_bpb: float
    sample: str
    learned: bool


def demo_config(model: str, data: str, steps: int, device: str, cache_dir: str | None) -> RunConfig:
    return RunConfig(
        model=model,
        data=DataConfig(source=data, seq_len=SEQ_LEN, cache_dir=cache_dir),
        optim=OptimConfig(lr=3e-3, warmup_steps=min(100, steps // 10), schedule="cosine", min_lr_ratio=0.1),
        train=TrainConfig(
            steps=steps, batch_size=16, eval_every=max(1, steps // 6), eval_tokens=32_768, save_every=0, log_every=10
        ),
        runtime=RuntimeConfig(device=device),
    )


def run_demo(
    out: Path, *, model: str = "decoder-tiny", data: str = "pydocs", steps: int | None = None,
    device: str = "auto", cache_dir: str | None = None,
) -> DemoReport:
    cfg = demo_config(model, data, steps or DEMO_STEPS, device, cache_dir)
    t0 = time.perf_counter()
    result = train(cfg, out)
    train_s = time.perf_counter() - t0

    runtime = resolve_runtime(cfg.runtime)
    net, resolved, ckpt = ckpt_io.load_model(result.checkpoint, runtime.device)
    tokenizer = ByteTokenizer()
    prepared = prepare_data(
        data, tokenizer, cache_dir=cache_dir,
        val_fraction=cfg.data.val_fraction, seed=cfg.data.split_seed, progress=False,
    )
    val_stream = prepared.val[:EVAL_MAX_IDS]
    scope = "the" if len(val_stream) == len(prepared.val) else "the first part of the"
    val = bits_per_byte(
        net, val_stream, context=EVAL_CONTEXT, stride=EVAL_STRIDE, batch_size=16,
        device=runtime.device, autocast=runtime.autocast(), progress=True,
    )
    unigram = unigram_bits_per_byte(val_stream)
    family = resolved["model_config"]["family"]
    sample_ids = list(
        stream(family, net, tokenizer.encode(PROMPT, bos=True), eos_id=tokenizer.eos_id,
               max_new_tokens=300, temperature=0.8, top_k=40, seed=0)
    )
    sample = PROMPT + tokenizer.decode(sample_ids)
    plot = plot_run(out, baselines={"order-0 (unigram)": unigram, "uniform": UNIFORM_BPB})
    learned = val.bits_per_byte < unigram < UNIFORM_BPB

    n_params = sum(p.numel() for p in {id(p): p for p in net.parameters()}.values())
    lines = [
        f"# stlm demo: {model} on {data}",
        "",
        f"- model: `{model}`, {n_params:,} parameters",
        f"- training: {result.step} steps x {cfg.train.batch_size} x {cfg.data.seq_len} bytes "
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
        f"| **{model}** | **{val.bits_per_byte:.3f}** |",
        "",
        f"Learned: **{'yes' if learned else 'NO'}** "
        f"({'below' if learned else 'not below'} the unigram baseline by {unigram - val.bits_per_byte:.3f} bits).",
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
        f"stlm demo --model {model} --data {data} --steps {result.step}",
        f"stlm evaluate {out} --context {EVAL_CONTEXT} --stride {EVAL_STRIDE} --max-ids {EVAL_MAX_IDS}",
        f"stlm generate {out} --prompt {PROMPT!r} --temperature 0.8 --top-k 40 --seed 0",
        "```",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")

    print(
        f"\nvalidation bits per byte ({val.n_bytes:,} bytes, context {val.context}, stride {val.stride}):\n"
        f"  uniform guess       {UNIFORM_BPB:.3f}\n"
        f"  order-0 (unigram)   {unigram:.3f}\n"
        f"  {model:<19} {val.bits_per_byte:.3f}   {'learned: below both baselines' if learned else 'DID NOT beat the baselines'}\n"
        f"\nsample:\n{sample}\n\n"
        f"run folder {out}: config.json, metrics.jsonl, loss.png, report.md, checkpoints/"
    )
    sys.stdout.flush()
    return DemoReport(run_dir=out, val=val, unigram_bpb=unigram, sample=sample, learned=learned)
