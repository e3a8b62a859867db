"""`stlm` command line: the table of subcommands and the flags each takes.

The flags of train/pretrain and finetune are derived from the typed configs
(`stlm/config.py`, `stlm/finetune/config.py`) by `flags.add_config_flags`, so
each one's help and default live beside its setting; `--set KEY=VALUE` reaches
any setting by its dotted key. What each subcommand does is in `commands.py`,
which calls the Python API (`stlm.api`). User mistakes (`UserError`) print one line,
`stlm <command>: error: ...`, and exit 2, as usage errors do (also one line);
so do the errors that only bad input or a full disk cause (`user_message`).
Ctrl-C exits 130. Only this package reads argv and the environment
(STLM_TRACEBACK=1 shows the traceback of every error, for bug reports).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, NoReturn

from stlm import __version__
from stlm.cli import commands
from stlm.cli.flags import HelpFormatter, add_config_flags, add_set_flag
from stlm.config import KD_CACHE_DTYPES, OPTIMIZERS, PARALLEL, PRECISIONS, SCHEDULES, DataConfig, RunConfig
from stlm.errors import UserError
from stlm.finetune.config import BUILTIN_TASKS, DIRECTIONS, KINDS, FinetuneConfig, TaskConfig
from stlm.finetune.spin import SpinConfig
from stlm.selfplay.loop import ALGORITHMS, BASELINES, SelfPlayConfig

CHOICES = {
    "optim.name": OPTIMIZERS,
    "optim.schedule": SCHEDULES,
    "runtime.precision": PRECISIONS,
    "runtime.parallel": PARALLEL,
    "task.name": tuple(BUILTIN_TASKS),
    "task.kind": KINDS,
    "task.direction": DIRECTIONS,
    "distill.cache_dtype": KD_CACHE_DTYPES,
    "train.baseline": BASELINES,
    "train.algorithm": ALGORITHMS,
}
# Flags named other than their field (the README's spellings), and other spellings kept working.
NAMES = {
    "data.source": "--data",
    "objective.name": "--objective",
    "optim.name": "--optimizer",
    "optim.warmup_steps": "--warmup",
    "init": "--model",
    "task.name": "--task",
    "task.train_file": "--train",
    "task.val_file": "--val",
    "task.test_file": "--test",
    "distill.alpha": "--kd-alpha",
    "distill.temperature": "--kd-temperature",
    "distill.reverse": "--kd-reverse",
    "distill.cache": "--kd-cache",
    "distill.cache_topk": "--kd-topk",
    "distill.cache_dtype": "--kd-cache-dtype",
}
ALIASES = {"optim.warmup_steps": ("--warmup-steps",), "init": ("--init",)}
DATA_KEYS = ("data.source", "data.text_field", "data.val_fraction", "data.split_seed", "data.cache_dir")


# Filesystem errors a user fixes (a full disk, a file where a folder is wanted, no permission), not bugs.
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
FILE_ERRORS = WRITE_ERRORS | {
    errno.EACCES,
    errno.EPERM,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.ENOENT,
    errno.ENOTEMPTY,
    errno.ENAMETOOLONG,
    errno.ELOOP,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except BrokenPipeError:  # e.g. `stlm generate ... | head`
        return 0
    except (UserError, OSError, UnicodeError, OverflowError, RecursionError) as exc:
        message = user_message(exc)
        if message is None or os.environ.get("STLM_TRACEBACK"):
            raise
        print(f"stlm {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stlm {args.command}: interrupted", file=sys.stderr)
        return 130


def user_message(exc: BaseException) -> str | None:
    """The one line for an error that bad input or the machine causes, not the code; None for a bug.

    Readers turn the mistakes they expect into `UserError`s naming the file and
    line; these are the rest: a full disk or a file where a folder belongs
    (anywhere a file is written), text that is not UTF-8, a number too large
    for the library it reaches, data nested deeper than Python's parsers go.
    """
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in FILE_ERRORS:
        names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
        reason = exc.strerror or os.strerror(exc.errno)
        if exc.errno in WRITE_ERRORS:
            return f"cannot write {names}: {reason}" if names else f"cannot write: {reason}"
        return f"{names}: {reason}" if names else reason
    if isinstance(exc, UnicodeDecodeError):
        return f"input is not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at offset {exc.start})"
    if isinstance(exc, UnicodeEncodeError):
        return f"text holds characters that cannot be written as {exc.encoding} ({exc.reason})"
    if isinstance(exc, OverflowError):
        return f"a number is too large ({exc})"
    if isinstance(exc, RecursionError):
        return "input is nested too deeply to read (JSON or TOML nesting beyond Python's recursion limit)"
    return None


class Parser(argparse.ArgumentParser):
    """Usage errors are one line too, pointing at --help instead of printing the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def count(low: int, high: int = 2**63 - 1) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            bounds = f">= {low}" if high == 2**63 - 1 else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


class Command(NamedTuple):
    names: tuple[str, ...]  # the first is the command; the others are the same command by another name
    help: str
    flags: Callable[[argparse.ArgumentParser], dict[str, str]]  # adds the flags; returns {config key: flag}
    run: Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="stlm", description="Super tiny language models: train, evaluate, generate.")
    parser.add_argument("--version", action="version", version=f"stlm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        for name in command.names:  # a parser per name, so `stlm pretrain --help` says "usage: stlm pretrain"
            about = command.help if name == command.names[0] else f"the same as `stlm {command.names[0]}`"
            p = sub.add_parser(name, help=about, description=command.help, formatter_class=HelpFormatter)
            settings = command.flags(p)
            if len(settings) > 10:  # one flag per setting: a usage line listing them all says less than the groups
                p.usage = "%(prog)s [options]"
            p.set_defaults(func=command.run, settings=settings)
    return parser


def _device_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    return add_config_flags(p, RunConfig(), only=("runtime.device", "runtime.threads"), show_keys=False)


def _inference_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    """Where and how a loaded checkpoint runs: device, threads, precision, int8 weights."""
    p.add_argument(
        "--quantize",
        metavar="MODE",
        help="int8: every Linear's weights in int8 for fast CPU decoding, activations fp32 (default: none)",
    )
    only = ("runtime.device", "runtime.threads", "runtime.precision")
    return add_config_flags(p, RunConfig(), only=only, show_keys=False, choices=CHOICES)


def _run_flags(p: argparse.ArgumentParser, what: str, example: str) -> None:
    p.add_argument("--config", type=Path, help=f"{what} recipe (.toml or .json); flags override it")
    add_set_flag(p, example)
    p.add_argument(
        "--out",
        type=Path,
        help=f"run directory (default: runs/{'<model>' if what == 'training' else 'finetune-<task>'}-<time>)",
    )
    p.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help=f"continue this {what} run from its newest checkpoint"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def models_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument(
        "name",
        nargs="?",
        help="a model name to resolve (a preset or e.g. t5-efficient-small-el16); default: every preset",
    )
    p.add_argument("--family", help="list only this family (decoder, pooled, t5)")
    p.add_argument("--parts", action="store_true", help="pooled models: parameters by part and what sharing saves")
    return {}


def prepare_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument("--tokenizer", default="byte", help="byte, bpe:PATH/tokenizer.json, byt5 or spiece:PATH")
    keys = (*DATA_KEYS, "data.workers", "data.streaming", "data.max_documents")
    return add_config_flags(p, DataConfig(), prefix="data.", names=NAMES, only=keys)


def train_tokenizer_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument(
        "--vocab-size",
        type=count(1),
        required=True,
        help="ids in all, PAD/BOS/EOS included (e.g. 4096 for bpe-10m; required)",
    )
    p.add_argument("--min-frequency", type=count(1), default=2, help="merge only pairs seen this often")
    p.add_argument(
        "--out", type=Path, required=True, help="tokenizer.json to write; use it as --tokenizer bpe:PATH (required)"
    )
    return add_config_flags(p, DataConfig(), prefix="data.", names=NAMES, only=DATA_KEYS)


def train_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    _run_flags(p, "training", "optim.weight_decay=0.05 or model.d_model=128")
    p.add_argument(
        "--stop-at", type=count(1), metavar="STEP", help="stop (and checkpoint) after this step; resume later"
    )
    return add_config_flags(p, RunConfig(), names=NAMES, aliases=ALIASES, choices=CHOICES)


def plot_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument("run", type=Path, help="run directory (holds metrics.jsonl)")
    p.add_argument("--out", type=Path, help="PNG to write (default: RUN/curves.png)")
    return {}


def finetune_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    _run_flags(p, "fine-tuning", "task.separator='\\n# '")
    return add_config_flags(p, FinetuneConfig(), names=NAMES, aliases=ALIASES, choices=CHOICES)


def classify_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument(
        "--model",
        type=Path,
        action="append",
        default=[],
        metavar="RUN",
        help="a classification run of stlm finetune (its best checkpoint) or a checkpoint; "
        "repeat to average several (same labels); at least one, or --bag-of-words",
    )
    p.add_argument("--input", type=Path, required=True, help="JSONL file, one object per line (required)")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help='JSONL to write: each input row with "probs" (label -> probability) and "label" (required)',
    )
    p.add_argument(
        "--bag-of-words",
        type=Path,
        metavar="TRAIN",
        help="also average in naive Bayes over word 1+2-grams fitted on this labelled file "
        "(.jsonl or .csv with input and target); needs --bag-of-words-val",
    )
    p.add_argument(
        "--bag-of-words-val",
        type=Path,
        metavar="VAL",
        help="labelled file on which bag of words' smoothing and temperature are chosen",
    )
    p.add_argument(
        "--bag-of-words-weight",
        type=float,
        metavar="W",
        help="bag of words' weight in the log-space average, between 0 and 1; the runs share the rest "
        "equally (default: an equal share)",
    )
    p.add_argument(
        "--windows",
        action="store_true",
        help="runs read a text longer than they were fine-tuned on (max_input_bytes) as consecutive windows "
        "of that size and average the windows' log-posteriors (default: its first window only, as "
        "fine-tuning's evaluation reads it)",
    )
    p.add_argument("--field", default="input", help="the field holding each text")
    p.add_argument("--batch-size", type=count(1), default=16, help="texts scored per forward pass")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    only = ("runtime.device", "runtime.threads", "runtime.precision")
    return add_config_flags(p, RunConfig(), only=only, show_keys=False, choices=CHOICES)


def spin_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument("run", nargs="?", type=Path, help="the fine-tuned run (its best checkpoint) or a checkpoint")
    p.add_argument("--out", type=Path, help="run directory (default: runs/spin-<task>-<time>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this SPIN run from its newest checkpoint")
    p.add_argument(
        "--stop-at", type=count(1), metavar="STEP", help="stop (and checkpoint) after this step; resume later"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(config=None)  # settings come from flags alone
    add_set_flag(p, "train.beta=0.2")
    # The task flags of fine-tuning; without --task or --train, SPIN uses the fine-tuned run's own task.
    keys = [k for k in ("task." + f for f in _task_fields()) if k != "task.kind"]
    table = add_config_flags(p, FinetuneConfig(), names=NAMES, choices=CHOICES, only=keys)
    for action in p._actions:
        if action.dest in ("task.name", "task.train_file"):
            action.help = (action.help or "").split(" (")[0] + (
                " (default: the fine-tuned run's own built-in task; a run on your files names them again)"
            )
    only = [k for k in _keys(SpinConfig()) if k != "init"]
    return table | add_config_flags(p, SpinConfig(), names=NAMES, choices=CHOICES, only=only)


def _task_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(TaskConfig)]


def _keys(config: object, prefix: str = "") -> list[str]:
    """Every dotted key of a config dataclass instance."""
    out: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out += _keys(value, prefix + f.name + ".") if dataclasses.is_dataclass(value) else [prefix + f.name]
    return out


def selfplay_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument("--out", type=Path, help="run directory (default: runs/selfplay-<game>-<time>)")
    p.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue this self-play run from its newest checkpoint"
    )
    p.add_argument(
        "--stop-at", type=count(1), metavar="STEP", help="stop (and checkpoint) after this update; resume later"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(config=None)  # settings come from flags alone
    add_set_flag(p, "train.entropy=0.02")
    return add_config_flags(
        p, SelfPlayConfig(), names={"model": "--model", "optim.name": "--optimizer"}, choices=CHOICES
    )


def evaluate_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument("checkpoint", type=Path, help="run directory or checkpoints/step-N folder")
    p.add_argument(
        "--task",
        action="append",
        metavar="TASK",
        help="bpb, wikitext2, blimp, piqa or mc:PATH; repeat for several (default: bpb)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="evaluation data folder (default: $STLM_DATA_DIR, else ../shared/data beside the repo, else the Hugging Face Hub through datasets, cached)",
    )
    p.add_argument(
        "--batch-size",
        type=count(1),
        help="windows (bpb) or sentences per forward pass (default: 8 windows, 64 sentences)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="folder for the results, named by task, data, split and step: e.g. bpb-pydocs-val-step-N.json and .md "
        "(default: RUN/evals/)",
    )
    p.add_argument(
        "--json", type=Path, help="also write the JSON result here, and the markdown beside it (one task only)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--limit", type=count(1), help="blimp, piqa, mc: score only the first N items (BLiMP: per phenomenon)"
    )
    p.add_argument(
        "--data",
        help="bpb: corpus to score (default: the one the model was trained on, when it is built in or hf:; "
        "a local file or folder is named again here)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="bpb: where token shards of --data are cached (default: the user cache directory)",
    )
    p.add_argument(
        "--split", choices=["val", "train", "test"], default="val", help="bpb: val or train; wikitext2: val or test"
    )
    p.add_argument("--file", type=Path, help="bpb: score this UTF-8 text file instead of a corpus split")
    p.add_argument("--context", type=count(2), help="bpb: window length in ids (default: the training seq_len)")
    p.add_argument("--stride", type=count(1), help="bpb: window step (default: context / 2)")
    p.add_argument(
        "--max-ids",
        type=count(2),
        help="bpb, wikitext2: score only the first N ids of the stream (bytes or BPE tokens, plus BOS/EOS)",
    )
    return _inference_flags(p)


def generate_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument("checkpoint", type=Path, help="run directory or checkpoints/step-N folder")
    p.add_argument("--prompt", default="", help="text to continue (an encoder-decoder reads it and writes anew)")
    p.add_argument(
        "--max-new-tokens",
        "--max-new-bytes",
        type=int,
        default=256,
        dest="max_new_tokens",
        metavar="N",
        help="new tokens to write, one setting under two names: a byte model's tokens are bytes",
    )
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument(
        "--temperature", type=float, help="sampling temperature (default: 0.8; --greedy and beam search use 0)"
    )
    p.add_argument("--top-k", type=int, help="sample from the k most likely tokens only")
    p.add_argument(
        "--top-p",
        type=float,
        help="sample from the smallest set of tokens whose probability reaches p",
    )
    p.add_argument("--seed", type=count(0), help="makes sampling reproducible")
    p.add_argument(
        "--num-beams", type=int, default=1, help="beam search over this many beams (encoder-decoders such as T5)"
    )
    p.add_argument(
        "--speculative",
        action="store_true",
        help="greedy, drafted by the multi-token heads of an mtp:K model and verified by it: the same text, "
        "fewer forwards; prints the mean accepted length on stderr",
    )
    return _inference_flags(p)


def average_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument(
        "models",
        type=Path,
        nargs="+",
        metavar="RUN",
        help="runs of one architecture (a fine-tuning run's best checkpoint, else its newest) or checkpoints",
    )
    p.add_argument("--out", type=Path, required=True, help="run directory to create (required)")
    p.add_argument(
        "--weights",
        type=float,
        nargs="+",
        metavar="W",
        help="one positive weight per run, scaled to sum to 1 (default: equal)",
    )
    return {}


def hf_import_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument("directory", type=Path, help="config.json + model.safetensors or pytorch_model.bin (+ spiece.model)")
    p.add_argument("--out", type=Path, required=True, help="run directory to create (required)")
    return {}


def hf_export_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument("checkpoint", type=Path, help="run directory or checkpoints/step-N folder")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="directory to write config.json, model.safetensors (+ spiece.model) (required)",
    )
    return {}


def export_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument("checkpoint", type=Path, help="run directory or checkpoints/step-N folder")
    p.add_argument(
        "--format",
        required=True,
        choices=("gguf", "hf", "ct2", "onnx"),
        help="gguf (llama.cpp; decoders), hf (transformers; decoders as Llama, T5), ct2 (CTranslate2; decoders, T5), "
        "onnx (ONNX Runtime with past key values; decoders, T5) (required)",
    )
    p.add_argument("--out", type=Path, required=True, help="new folder to write, outside the run (required)")
    p.add_argument(
        "--dtype",
        help="number type: gguf f32, f16, q8_0; hf f32, f16; ct2 int8, float32, float16; onnx f32 "
        "(default: the first listed for the format)",
    )
    return {}


def serve_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument("checkpoint", type=Path, metavar="RUN", help="run directory or checkpoints/step-N folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=count(0, 65535), default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` on /v1/* (default: no key)")
    p.add_argument("--model-name", help="the model id clients name (default: the run folder's name)")
    p.add_argument("--max-batch", type=count(1, 256), default=8, help="choices generated at once")
    p.add_argument("--queue-size", type=count(0), default=64, help="choices waiting for a slot; beyond it, 429")
    p.add_argument(
        "--max-prompt-tokens", type=count(1), default=1024, help="longest prompt in ids (and the model's context)"
    )
    p.add_argument("--max-tokens-limit", type=count(1), default=512, help="the largest max_tokens a request may ask")
    p.add_argument("--log-level", choices=["warning", "info", "debug"], default="info", help="server log detail")
    return _inference_flags(p)


def demo_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    p.add_argument("--model", default="decoder-tiny", help="preset to train")
    p.add_argument("--data", default="pydocs", help="corpus name, text file, directory, .jsonl, or hf:NAME")
    p.add_argument("--steps", type=count(1), help="optimizer steps (default: sized for a few minutes on 2 CPU cores)")
    p.add_argument(
        "--tokenizer",
        default="auto",
        help="auto (bytes; for a token preset such as bpe-tiny, a BPE of its "
        "vocabulary fitted on the training split into RUN/tokenizer.json), byte or bpe:PATH (tokenizer.json)",
    )
    p.add_argument("--out", type=Path, help="run directory (default: runs/demo-<time>)")
    p.add_argument(
        "--cache-dir", help="where token shards and downloads are cached (default: the user cache directory)"
    )
    return _device_flags(p)


COMMANDS = [
    Command(
        ("models",),
        "list every model preset with its exact parameter count, or resolve one name",
        models_flags,
        commands.cmd_models,
    ),
    Command(("corpora",), "list the built-in corpora", lambda p: {}, commands.cmd_corpora),
    Command(
        ("prepare",),
        "tokenize a corpus into cached token shards and print its statistics",
        prepare_flags,
        commands.cmd_prepare,
    ),
    Command(
        ("train-tokenizer",),
        "train a byte-level BPE tokenizer on a corpus's training split",
        train_tokenizer_flags,
        commands.cmd_train_tokenizer,
    ),
    Command(("train", "pretrain"), "train or pretrain a model (or --resume a run)", train_flags, commands.cmd_train),
    Command(("plot",), "draw a run's loss and throughput curves to PNG", plot_flags, commands.cmd_plot),
    Command(
        ("finetune",),
        "fine-tune on a text-to-text task (built-in --task, or --train FILE)",
        finetune_flags,
        commands.cmd_finetune,
    ),
    Command(
        ("classify",),
        "label texts with fine-tuned classification runs: each label's probability, averaged over runs",
        classify_flags,
        commands.cmd_classify,
    ),
    Command(
        ("average",),
        "average the weights of several checkpoints of one model (fine-tunes of one start: a model soup)",
        average_flags,
        commands.cmd_average,
    ),
    Command(
        ("spin",),
        "SPIN self-play fine-tuning: a fine-tuned run learns to prefer the gold answers over its own",
        spin_flags,
        commands.cmd_spin,
    ),
    Command(
        ("selfplay",),
        "game self-play: one policy plays both seats of tic-tac-toe and learns by REINFORCE",
        selfplay_flags,
        commands.cmd_selfplay,
    ),
    Command(
        ("evaluate",),
        "benchmark a checkpoint: bits per byte, WikiText-2, BLiMP, PIQA, multiple choice",
        evaluate_flags,
        commands.cmd_evaluate,
    ),
    Command(("generate",), "sample text from a checkpoint, streamed to stdout", generate_flags, commands.cmd_generate),
    Command(
        ("hf-import",),
        "turn a Hugging Face T5 directory into an stlm checkpoint",
        hf_import_flags,
        commands.cmd_hf_import,
    ),
    Command(
        ("hf-export",),
        "write a T5 checkpoint in Hugging Face format (transformers loads it)",
        hf_export_flags,
        commands.cmd_hf_export,
    ),
    Command(
        ("export",),
        "write a checkpoint for llama.cpp (gguf), transformers (hf), CTranslate2 (ct2) or ONNX Runtime (onnx)",
        export_flags,
        commands.cmd_export,
    ),
    Command(
        ("serve",),
        "serve a checkpoint over an OpenAI-compatible HTTP API, with a playground page at /",
        serve_flags,
        commands.cmd_serve,
    ),
    Command(
        ("demo",),
        "the main job: train, evaluate and sample a small model on the embedded corpus",
        demo_flags,
        commands.cmd_demo,
    ),
]

if __name__ == "__main__":
    raise SystemExit(main())
