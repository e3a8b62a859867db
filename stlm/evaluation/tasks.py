"""Benchmark tasks by name: what `stlm evaluate --task NAME` runs.

    bpb         bits per byte of a text file or a corpus split (text_bpb.py)
    wikitext2   bits per byte of WikiText-2 valid or test (text_bpb.py)
    blimp       BLiMP minimal pairs, overall and per phenomenon (blimp.py)
    piqa        PIQA validation, two-way multiple choice (multiple_choice.py)
    mc:PATH     any multiple-choice set in the generic JSONL shape (multiple_choice.py)

A task takes an `EvalModel` (a loaded model with its tokenizer and scoring
settings) and `EvalOptions`, and returns a `TaskResult`: headline metrics, a
markdown table, the data files it read and the settings it used, which the
caller stores with `record.provenance`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stlm.errors import UserError
from stlm.evaluation.scoring import ContinuationScore, score_continuations


@dataclass
class EvalModel:
    """A model ready to be scored, and how to score it."""

    model: torch.nn.Module
    tokenizer: Any
    family: str  # decoder | pooled | t5
    config: dict[str, Any] = field(default_factory=dict)  # the checkpoint's resolved run config
    device: torch.device | str = "cpu"
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None  # a fresh context per call
    batch_size: int = 64
    progress: bool = False

    def score(self, requests: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        """log P(continuation | context) for each pair: the one scoring path of every task.

        A continuation longer than a causal model's context is scored on its
        last max_seq_len units (n_units says so), as lm-eval does.
        """
        return score_continuations(
            self.model, self.tokenizer, self.family, requests,
            batch_size=self.batch_size, truncate_long=True, device=self.device,
            autocast=self.autocast() if self.autocast else None, progress=self.progress,
        )


@dataclass(frozen=True)
class EvalOptions:
    """Task settings; each task reads the ones it needs and records them."""

    data_dir: Path | None = None  # the shared evaluation data folder (blimp/, piqa/, wikitext-2/)
    limit: int | None = None  # first N items (per phenomenon for BLiMP)
    # bits per byte
    file: Path | None = None
    corpus: str | None = None  # default: the corpus the model was trained on
    split: str = "val"  # val | train (corpus), val | test (wikitext2)
    context: int | None = None
    stride: int | None = None
    max_ids: int | None = None


@dataclass
class TaskResult:
    task: str
    metrics: dict[str, float]  # headline numbers, e.g. {"accuracy": 0.62}
    markdown: str  # tables for people
    data_files: list[Path]
    settings: dict[str, Any]
    summary: str = ""  # one line for a terminal
    details: dict[str, Any] = field(default_factory=dict)  # e.g. per-phenomenon accuracy

    def document(self, provenance: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The JSON record and the markdown page of this result, both carrying its provenance."""
        record = {
            "task": self.task, "metrics": self.metrics, "summary": self.summary,
            "details": self.details, "provenance": provenance,
        }
        m, c = provenance["model"], provenance["checkpoint"]
        page = "\n".join([
            f"# {self.task}: {m['name']} ({m['family']}, {m['n_params']:,} parameters)",
            "",
            f"- checkpoint: `{c['path']}` (step {c['step']}, manifest sha256 `{(c['manifest_sha256'] or '?')[:16]}`)",
            *(f"- data: `{d['path']}` sha256 `{d['sha256'][:16]}`" for d in provenance["data"][:3]),
            *([f"- data: ... {len(provenance['data']) - 3} more files (all in the JSON)"] if len(provenance["data"]) > 3 else []),
            f"- settings: {', '.join(f'{k} {v}' for k, v in provenance['settings'].items())}",
            f"- stlm {provenance['stlm_version']}, {provenance['device']}, {provenance['time']}",
            "",
            self.summary,
            "",
            self.markdown,
        ])
        return record, page


TaskFn = Callable[[EvalModel, EvalOptions], TaskResult]
MC_PREFIX = "mc:"
DATA_DIR_TASKS = ("wikitext2", "blimp", "piqa")  # tasks that read the shared evaluation data folder
# Items per forward pass: BPB windows are long (a context each); benchmark items are sentences.
BATCH_SIZES = {"bpb": 8, "wikitext2": 8}
DEFAULT_BATCH_SIZE = 64


def default_batch_size(name: str) -> int:
    return BATCH_SIZES.get(name, DEFAULT_BATCH_SIZE)


def _registry() -> dict[str, TaskFn]:
    from stlm.evaluation import blimp, multiple_choice, text_bpb

    return {
        "bpb": text_bpb.run_bpb,
        "wikitext2": text_bpb.run_wikitext2,
        "blimp": blimp.run_blimp,
        "piqa": multiple_choice.run_piqa,
    }


def task_names() -> list[str]:
    return [*_registry(), f"{MC_PREFIX}PATH"]


def run_task(name: str, model: EvalModel, options: EvalOptions) -> TaskResult:
    if options.limit is not None and options.limit < 1:
        raise UserError(f"--limit must be at least 1, got {options.limit}")
    if name.startswith(MC_PREFIX):
        from stlm.evaluation.multiple_choice import run_generic

        path = name[len(MC_PREFIX) :]
        if not path:
            raise UserError("task 'mc:' needs a file: --task mc:PATH/TO/items.jsonl")
        return run_generic(model, options, Path(path))
    tasks = _registry()
    if name not in tasks:
        raise UserError(f"unknown task {name!r}; tasks: {', '.join(task_names())}")
    return tasks[name](model, options)


def task_slug(name: str) -> str:
    """A file-name-safe name for a task's results: 'mc:data/x.jsonl' -> 'mc-x'."""
    if name.startswith(MC_PREFIX):
        return "mc-" + Path(name[len(MC_PREFIX) :]).stem
    return name


def resolve_data_dir(flag: Path | None, env_value: str | None, cwd: Path) -> Path:
    """The evaluation data folder: --data-dir, else $STLM_DATA_DIR, else ../shared/data next to the repo.

    "The repo" is the nearest folder at or above `cwd` holding .git or
    pyproject.toml; outside any repo the default is ../shared/data from `cwd`.
    """
    if flag is not None:
        where, path = "--data-dir", Path(flag)
    elif env_value:
        where, path = "STLM_DATA_DIR", Path(env_value)
    else:
        cwd = Path(cwd).resolve()
        root = next((d for d in (cwd, *cwd.parents) if (d / ".git").exists() or (d / "pyproject.toml").is_file()), cwd)
        where, path = f"the default next to {root}", root.parent / "shared" / "data"
    if not path.is_dir():
        raise UserError(
            f"evaluation data folder {path} (from {where}) does not exist; "
            "pass --data-dir DIR or set STLM_DATA_DIR to the folder holding blimp/, piqa/ and wikitext-2/"
        )
    return path


def data_subdir(options: EvalOptions, name: str) -> Path:
    """A benchmark's folder inside the data folder, with a clear error when it is missing."""
    if options.data_dir is None:
        raise UserError(f"task needs the evaluation data folder (with {name}/ inside); pass --data-dir DIR")
    path = Path(options.data_dir) / name
    if not path.is_dir():
        raise UserError(f"{path} does not exist; the evaluation data folder {options.data_dir} has no {name}/")
    return path
