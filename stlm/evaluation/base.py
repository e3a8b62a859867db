"""What every evaluation task shares: the model it scores, its options and its result.

Each task file (text_bpb.py, blimp.py, multiple_choice.py) imports these
types; `tasks.py` names the tasks. Nothing here imports a task.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stlm.errors import UserError
from stlm.evaluation.scoring import ContinuationScore, Family, score_continuations


@dataclass
class EvalModel:
    """A model ready to be scored, and how to score it."""

    model: torch.nn.Module
    tokenizer: Any
    family: Family  # the model's registry row
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
            self.model,
            self.tokenizer,
            self.family,
            requests,
            batch_size=self.batch_size,
            truncate_long=True,
            device=self.device,
            autocast=self.autocast() if self.autocast else None,
            progress=self.progress,
        )


@dataclass(frozen=True)
class EvalOptions:
    """Task settings; each task reads the ones it needs and records them."""

    data_dir: Path | None = None  # the evaluation data folder (blimp/, piqa/, wikitext-2/); None: the Hugging Face Hub
    hf_cache_dir: Path | None = None  # where `datasets` caches Hub sets when data_dir is None (None: its default)
    limit: int | None = None  # first N items (per phenomenon for BLiMP)
    # bits per byte
    file: Path | None = None
    corpus: str | None = None  # default: the corpus the model was trained on (built-in or hf: only)
    cache_dir: Path | None = None  # token shards of the corpus; default: the user cache folder
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
            "task": self.task,
            "metrics": self.metrics,
            "summary": self.summary,
            "details": self.details,
            "provenance": provenance,
        }
        m, c = provenance["model"], provenance["checkpoint"]
        page = "\n".join(
            [
                f"# {self.task}: {m['name']} ({m['family']}, {m['n_params']:,} parameters)",
                "",
                f"- checkpoint: `{c['path']}` (step {c['step']}, manifest sha256 `{(c['manifest_sha256'] or '?')[:16]}`)",
                *(f"- data: `{d['path']}` sha256 `{d['sha256'][:16]}`" for d in provenance["data"][:3]),
                *(
                    [f"- data: ... {len(provenance['data']) - 3} more files (all in the JSON)"]
                    if len(provenance["data"]) > 3
                    else []
                ),
                f"- settings: {', '.join(f'{k} {v}' for k, v in provenance['settings'].items())}",
                f"- stlm {provenance['stlm_version']}, {provenance['device']}, {provenance['time']}",
                "",
                self.summary,
                "",
                self.markdown,
            ]
        )
        return record, page


def data_subdir(options: EvalOptions, name: str) -> Path:
    """A benchmark's folder inside the data folder, with a clear error when it is missing."""
    if options.data_dir is None:
        raise UserError(f"task needs the evaluation data folder (with {name}/ inside); pass --data-dir DIR")
    path = Path(options.data_dir) / name
    if not path.is_dir():
        raise UserError(f"{path} does not exist; the evaluation data folder {options.data_dir} has no {name}/")
    return path
