"""report.md: what a run trained, how well it did beside references that need no model, how to redo it.

Every training run ends by writing one (`write_run_report`, called by
`training.loop.train` and `resume`, so `stlm train` and the Python API both
get it) together with the loss plot; `stlm demo` writes the same report with
its own final evaluation, a verdict and a sample. One writer, so they read
alike:

    # stlm train: decoder-tiny on pydocs
    - model, parameters (tokenizer), training: steps x batch in time on device,
      throughput, checkpoint; or, first, that the run stopped early and where
    ## Validation bits per byte (N bytes: which text, context, stride)
    | model | BPB |  with the uniform and order-0 references on the same bytes
    verdict (the demo)                ![loss curve](loss.png)
    ## Sample (the demo)              ## Reproduce      ## Continue (a run stopped early)

The references come from the run's cached token files (`data.cached_data`),
never from reading the corpus again; when the cache is gone they are left out.
"""

from __future__ import annotations

import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stlm import checkpoint as ckpt_io
from stlm.config import RunConfig
from stlm.data import PreparedData, cached_data, local_path
from stlm.errors import UserError
from stlm.evaluation.bpb import REFERENCE_LABELS, reference_bpb
from stlm.tokenizers import ByteTokenizer
from stlm.training.logging import read_metrics
from stlm.training.plot import plot_run

REPORT = "report.md"
PLOT = "loss.png"


@dataclass
class TrainResult:
    """What a training run returns (`training.loop.train` / `resume`), and what its report reads."""

    run_dir: Path
    step: int
    checkpoint: Path
    val: dict[str, float] | None  # the last validation metrics (val_bpb or val_loss, ...)
    interrupted: bool
    elapsed_s: float
    cache_dir: str | None = None  # the token cache this process used (the user's, never a checkpoint's)


@dataclass
class Validation:
    """One validation measurement as the report shows it."""

    value: float
    unit: str  # "bpb" (bits per byte) or "loss" (nats per target token)
    n: int  # bytes (bpb) or target tokens (loss) scored
    text: str  # what was scored, e.g. "the `pydocs` validation split"
    context: int | None = None
    stride: int | None = None
    step: int | None = None  # the step it was taken at, when that is not the run's last
    references: dict[str, float] = field(default_factory=dict)  # reference_bpb's keys -> bits per byte


@dataclass
class RunReport:
    """Everything report.md says; `markdown()` lays it out, `write()` puts it in the run folder."""

    title: str
    run_dir: Path
    model: str
    n_params: int
    step: int
    total_steps: int
    batch: str  # e.g. "16 x 256 bytes"
    elapsed_s: float
    device: str
    checkpoint: Path
    tokenizer: str | None = None  # a line for token (non-byte) tokenizers
    stopped: str | None = (
        None  # how a run ended before its last step: "interrupted by a signal", "as --stop-at 5 asked"
    )
    throughput: str | None = None
    validation: Validation | None = None
    verdict: str | None = None
    sample: tuple[str, str] | None = None  # (how it was drawn, the text)
    reproduce: list[str] = field(default_factory=list)
    continue_with: list[str] = field(default_factory=list)  # commands that take a stopped run on
    plot: str | None = None  # image file beside report.md
    continued_from: str | None = None  # the checkpoint a continued pretraining run started from

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        if self.stopped:
            note = f"**Stopped early, {self.stopped}, at step {self.step:,} of {self.total_steps:,}.** " + (
                "The numbers below are those of a partly trained model; see Continue."
                if self.validation
                else "See Continue."
            )
            lines += [note, ""]
        of = f"of {self.total_steps:,} " if self.stopped else ""
        lines += [
            f"- model: `{self.model}`, {self.n_params:,} parameters",
            *([f"- continued from: `{self.continued_from}`"] if self.continued_from else []),
            *([f"- tokenizer: {self.tokenizer}"] if self.tokenizer else []),
            f"- training: {self.step} {of}steps x {self.batch} in {self.elapsed_s / 60:.1f} min on {self.device}",
            *([f"- throughput: {self.throughput}"] if self.throughput else []),
            f"- checkpoint: `{self.checkpoint}`",
            "",
        ]
        if self.validation is not None:
            lines += _validation_section(self.model, self.validation)
        if self.verdict:
            lines += [self.verdict, ""]
        if self.plot:
            lines += [f"![loss curve]({self.plot})", ""]
        if self.sample:
            how, text = self.sample
            lines += [f"## Sample ({how})", "", "```text", text, "```", ""]
        for heading, commands in (("Reproduce", self.reproduce), ("Continue", self.continue_with)):
            if commands:
                lines += [f"## {heading}", "", "```bash", *commands, "```", ""]
        return "\n".join(lines)

    def write(self) -> Path:
        path = self.run_dir / REPORT
        path.write_text(self.markdown(), encoding="utf-8")
        return path


def _validation_section(model: str, val: Validation) -> list[str]:
    at = f", at step {val.step:,}" if val.step is not None else ""
    window = f", context {val.context}, stride {val.stride}" if val.context else ""
    if val.unit == "loss":
        return [
            f"## Validation loss ({val.n:,} target tokens of {val.text}{at})",
            "",
            f"**{val.value:.4f}** nats per target token.",
            "",
        ]
    rows = [f"| {REFERENCE_LABELS[k]} | {v:.3f} |" for k, v in sorted(val.references.items(), key=lambda kv: -kv[1])]
    return [
        f"## Validation bits per byte ({val.n:,} bytes: {val.text}{window}{at})",
        "",
        "| model | BPB |",
        "|---|---|",
        *rows,
        f"| **{model}** | **{val.value:.3f}** |",
        "",
    ]


def write_run_report(result: TrainResult, *, stopped: str | None = None) -> Path:
    """report.md and loss.png for a finished (or stopped) training run; returns the report's path."""
    report = run_report(result, stopped=stopped)
    references = report.validation.references if report.validation else {}
    report.plot = draw_plot(result.run_dir, references)
    return report.write()


def data_flag(source: str) -> str:
    """` --data SOURCE` when the run's corpus is a local path: a checkpoint names no path stlm reads,
    so resuming or scoring such a run names its data again. Empty for built-in corpora and hf: names."""
    return f" --data {shlex.quote(source)}" if local_path(source) is not None else ""


def draw_plot(run_dir: Path, references: dict[str, float]) -> str | None:
    """loss.png with the references as labelled lines; None when no training step was logged yet."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file() or not any("loss" in r for r in read_metrics(metrics)):
        return None
    return plot_run(run_dir, run_dir / PLOT, baselines={REFERENCE_LABELS[k]: v for k, v in references.items()}).name


def run_report(result: TrainResult, *, stopped: str | None = None) -> RunReport:
    """The report of a training run, from its result and its folder (config.json, metrics.jsonl, token cache)."""
    run_dir = result.run_dir
    record = ckpt_io.read_record(run_dir / "config.json")
    cfg = RunConfig.from_dict(record.sections.get("run", {}), source=str(run_dir / "config.json"))
    tokenizer = record.load_tokenizer()
    records = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    is_bytes = isinstance(tokenizer, ByteTokenizer)
    unit = "bytes" if is_bytes else "tokens"
    accum = f" x {cfg.train.grad_accum} accumulated" if cfg.train.grad_accum > 1 else ""
    # Bits per byte of the whole validation split (a causal model), after the run or after resuming it.
    again = data_flag(cfg.data.source)
    measure = [] if record.family.encoder_decoder else [f"stlm evaluate {shlex.quote(str(run_dir))}{again}"]
    return RunReport(
        title=f"stlm train: {cfg.model} on {cfg.data.source}",
        run_dir=run_dir,
        model=cfg.model,
        n_params=record.family.count_params(record.model_config),
        step=result.step,
        total_steps=cfg.train.steps,
        batch=f"{cfg.train.batch_size}{accum} x {cfg.data.seq_len} {unit}",
        elapsed_s=result.elapsed_s,
        device=(record.sections.get("header") or {}).get("device", "?"),
        checkpoint=result.checkpoint,
        tokenizer=None if is_bytes else f"{tokenizer.vocab_size} ids, `{cfg.data.tokenizer}`",
        stopped=stopped,
        throughput=_throughput(records),
        validation=_last_validation(
            records, cfg, run_data(record, tokenizer, result.cache_dir), tokenizer, result.step
        ),
        reproduce=[train_command(cfg, out=f"{run_dir}-again"), *([] if stopped else measure)],
        continue_with=[f"stlm train --resume {shlex.quote(str(run_dir))}{again}", *measure] if stopped else [],
        continued_from=record.sections.get("init_checkpoint"),
    )


def run_data(record: ckpt_io.RunRecord, tokenizer: Any, cache_dir: str | None) -> PreparedData | None:
    """The run's token files, if they are in `cache_dir` (the user's cache; never reads the corpus).

    Not the cache_dir the record names: a checkpoint never decides where stlm reads or writes."""
    fingerprint = (record.sections.get("data") or {}).get("fingerprint")
    data_cfg = (record.sections.get("run") or {}).get("data") or {}
    if not fingerprint:
        return None
    try:
        return cached_data(
            fingerprint,
            tokenizer,
            cache_dir=cache_dir,
            val_fraction=data_cfg.get("val_fraction", 0.05),
            seed=data_cfg.get("split_seed", 0),
        )
    except UserError:  # a damaged cache: the report goes without references
        return None


def _last_validation(
    records: list[dict[str, Any]], cfg: RunConfig, data: PreparedData | None, tokenizer: Any, final_step: int
) -> Validation | None:
    last = next((r for r in reversed(records) if "val_bpb" in r or "val_loss" in r), None)
    if last is None:
        return None
    step = None if last["step"] == final_step else int(last["step"])
    if "val_loss" in last:
        return Validation(
            last["val_loss"],
            "loss",
            int(last.get("val_tokens", 0)),
            f"the `{cfg.data.source}` validation split",
            step=step,
        )
    # The loop scores the first eval_tokens ids of the validation split in windows of seq_len.
    whole = data is not None and cfg.train.eval_tokens + 1 >= len(data.val)
    text = (
        f"the `{cfg.data.source}` validation split"
        if whole
        else f"the first {cfg.train.eval_tokens:,} tokens of the `{cfg.data.source}` validation split"
    )
    references = reference_bpb(data.val[: cfg.train.eval_tokens + 1], tokenizer) if data is not None else {}
    return Validation(
        last["val_bpb"],
        "bpb",
        int(last.get("val_bytes", 0)),
        text,
        context=cfg.data.seq_len,
        stride=cfg.data.seq_len,
        step=step,
        references=references,
    )


def _throughput(records: list[dict[str, Any]]) -> str | None:
    """Median over the logged intervals: steady speed, not skewed by a slow first step or a pause."""
    logged = [r for r in records if r.get("tokens_per_s")]
    if not logged:
        return None
    tokens = statistics.median(r["tokens_per_s"] for r in logged)
    text = f"{tokens:,.0f} tokens/s"
    speeds = [r["bytes_per_s"] for r in logged if r.get("bytes_per_s")]
    if speeds:
        per_byte = statistics.median(speeds)
        text += " (= bytes/s)" if abs(per_byte - tokens) <= 0.01 * tokens else f", {per_byte:,.0f} bytes/s"
    mfus = [r["mfu"] for r in logged if r.get("mfu") is not None]
    if mfus:
        text += f", MFU {100 * statistics.median(mfus):.1f}%"
    return text + f" (median of {len(logged)} logged interval{'s' if len(logged) != 1 else ''})"


def train_command(cfg: RunConfig, *, out: str) -> str:
    """`stlm train` with every setting that differs from the defaults: the same run again, into `out`."""
    given, default = _flat(cfg.to_dict()), _flat(RunConfig().to_dict())
    flags = {"model": "--model", "data.source": "--data", "train.steps": "--steps"}
    words = ["stlm", "train"]
    for key, flag in flags.items():
        words += [flag, str(given[key])]
    for key, value in given.items():
        if key not in flags and value != default.get(key):
            words += ["--set", f"{key}={_setting(value)}"]
    return " ".join(shlex.quote(w) for w in [*words, "--out", out])


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _setting(value: Any) -> str:
    """A value as `--set` reads it back (config._coerce): true/false, none, numbers, strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)
