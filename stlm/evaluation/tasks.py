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

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stlm.errors import UserError
from stlm.evaluation import blimp, multiple_choice, text_bpb
from stlm.evaluation.base import EvalModel, EvalOptions, TaskResult

TaskFn = Callable[[EvalModel, EvalOptions], TaskResult]
MC_PREFIX = "mc:"
DATA_DIR_TASKS = ("wikitext2", "blimp", "piqa")  # tasks that read the shared evaluation data folder
# Items per forward pass: BPB windows are long (a context each); benchmark items are sentences.
BATCH_SIZES = {"bpb": 8, "wikitext2": 8}
DEFAULT_BATCH_SIZE = 64


def default_batch_size(name: str) -> int:
    return BATCH_SIZES.get(name, DEFAULT_BATCH_SIZE)


def _registry() -> dict[str, TaskFn]:
    return {
        "bpb": text_bpb.run_bpb,
        "wikitext2": text_bpb.run_wikitext2,
        "blimp": blimp.run_blimp,
        "piqa": multiple_choice.run_piqa,
    }


def task_names() -> list[str]:
    return [*_registry(), f"{MC_PREFIX}PATH"]


def check_limit(names: list[str], limit: int | None) -> None:
    """A UserError if `limit` is given with a task that scores text (it counts items; --max-ids cuts text)."""
    text_tasks = [n for n in names if n in BATCH_SIZES]
    if limit is not None and text_tasks:  # it would be ignored there: a full run under a "limit" name
        raise UserError(
            f"--limit counts items (blimp, piqa, mc:); {', '.join(text_tasks)} score text: "
            "cut it with --max-ids N instead"
        )


def run_task(name: str, model: EvalModel, options: EvalOptions) -> TaskResult:
    if options.limit is not None and options.limit < 1:
        raise UserError(f"--limit must be at least 1, got {options.limit}")
    check_limit([name], options.limit)
    if name.startswith(MC_PREFIX):
        path = name[len(MC_PREFIX) :]
        if not path:
            raise UserError("task 'mc:' needs a file: --task mc:PATH/TO/items.jsonl")
        return multiple_choice.run_generic(model, options, Path(path))
    tasks = _registry()
    if name not in tasks:
        raise UserError(f"unknown task {name!r}; tasks: {', '.join(task_names())}")
    return tasks[name](model, options)


def task_slug(name: str) -> str:
    """A file-name-safe name for a task's results: 'mc:data/x.jsonl' -> 'mc-x'."""
    if name.startswith(MC_PREFIX):
        return "mc-" + Path(name[len(MC_PREFIX) :]).stem
    return name


def result_name(task: str, options: EvalOptions, checkpoint_name: str, config: dict[str, Any] | None = None) -> str:
    """The file stem of one evaluation's results: task, data, split, the settings given, checkpoint.

    Two evaluations that score different things get different names and the
    same evaluation run again gets the same one, so results are never
    overwritten by another evaluation's:

        bpb (the run's own corpus, val)     bpb-pydocs-val-step-00001200
        bpb --split train --max-ids 1000    bpb-pydocs-train-max1000-step-00001200
        bpb --file notes/a.txt              bpb-a.txt-step-00001200
        wikitext2 --split test              wikitext2-test-step-00001200
        blimp --limit 100                   blimp-limit100-step-00001200
        mc:data/items.jsonl                 mc-items-step-00001200

    Only what the task reads goes in: a split for the corpus and WikiText-2
    tasks, the data for `bpb`, BPB window settings when given. `config` is the
    checkpoint's record, for the corpus `bpb` scores by default.
    """
    parts = [task_slug(task)]
    if task == "bpb":
        if options.file is not None:
            parts.append(Path(options.file).name)
        else:
            parts += [Path(text_bpb.corpus_of(options, config or {})).name or "corpus", options.split]
    elif task == "wikitext2":
        parts.append(options.split)
    if task in BATCH_SIZES:  # the bits-per-byte tasks: their window settings change the number
        parts += [
            f"{label}{value}"
            for label, value in (("ctx", options.context), ("stride", options.stride), ("max", options.max_ids))
            if value
        ]
    if options.limit is not None:
        parts.append(f"limit{options.limit}")
    parts.append(checkpoint_name)
    # Only letters, digits, dot, underscore and dash: safe on every file system and in a shell.
    return "-".join(re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._") or "_" for part in parts)


def resolve_data_dir(flag: Path | None, env_value: str | None, cwd: Path) -> Path | None:
    """The evaluation data folder: --data-dir, else $STLM_DATA_DIR, else ../shared/data next to the repo.

    "The repo" is the nearest folder at or above `cwd` holding .git or
    pyproject.toml; outside any repo the default is ../shared/data from `cwd`.
    None when nothing was given and the default folder does not exist: the
    tasks then read the sets from the Hugging Face Hub (hub.py). A folder
    that was given but does not exist is an error.
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
            return None
    if not path.is_dir():
        raise UserError(
            f"evaluation data folder {path} (from {where}) does not exist; "
            "pass --data-dir DIR or set STLM_DATA_DIR to the folder holding blimp/, piqa/ and wikitext-2/"
        )
    return path
