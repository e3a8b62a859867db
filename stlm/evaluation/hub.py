"""The evaluation sets from the Hugging Face Hub, when no data folder is given.

Where a task's data comes from, in order:

1. a data folder (`--data-dir`, `$STLM_DATA_DIR`, or `../shared/data` beside
   the repository), holding `blimp/`, `piqa/` and `wikitext-2/` in their
   release formats (see docs/evaluation.md);
2. otherwise the dataset named below, through `datasets` (`pip install
   stlm[hf]`): downloaded once when online and kept in the `datasets` cache
   (`$HF_DATASETS_CACHE`, or `EvalOptions.hf_cache_dir`), read from that cache
   when offline (`HF_DATASETS_OFFLINE=1`).

A set that is in neither place is one `UserError` line naming both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stlm.errors import UserError


@dataclass(frozen=True)
class HubSet:
    """One evaluation set on the Hub: the repository, its config and split, and the folder it replaces."""

    repo: str
    config: str | None
    folder: str  # the data-folder equivalent, for the error message


BLIMP = HubSet("nyu-mll/blimp", None, "blimp")  # one config per phenomenon (its UID), split "train"
# PIQA's original repository (ybisk/piqa) is a loading script, which `datasets` 4+ no longer
# runs; this is the Parquet copy lm-evaluation-harness reads, with the same fields and label.
PIQA = HubSet("baber/piqa", None, "piqa")
# The tokenized release (<unk> markers), the same text as the data folder's wikitext-2/ files.
WIKITEXT2 = HubSet("Salesforce/wikitext", "wikitext-2-v1", "wikitext-2")
WIKITEXT2_SPLITS = {"val": "validation", "test": "test"}


@dataclass(frozen=True)
class HubRows:
    rows: list[dict[str, Any]]
    files: list[Path]  # the Arrow files `datasets` read them from (hashed into the provenance)


def load_rows(hub: HubSet, split: str, *, config: str | None = None, cache_dir: Path | None = None) -> HubRows:
    """Every row of one split of a Hub set, as dicts, from the `datasets` cache (downloading if online)."""
    config = config or hub.config
    what = hub.repo + (f" ({config})" if config else "")
    try:
        import datasets  # optional and heavy: only when no data folder is given
    except ImportError:
        raise UserError(
            f"no evaluation data folder was found and {what} needs the `datasets` package: "
            f"pass --data-dir DIR (or set STLM_DATA_DIR) to a folder holding {hub.folder}/, "
            f"or pip install 'stlm[hf]' to read it from the Hugging Face Hub"
        ) from None
    try:
        dataset = datasets.load_dataset(
            hub.repo, config, split=split, cache_dir=str(cache_dir) if cache_dir is not None else None
        )
    except Exception as exc:  # offline and not cached, no such config, a broken cache: one line either way
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"{what} split {split!r} is neither in a data folder nor loadable from the Hugging Face Hub "
            f"or its cache ({reason}): pass --data-dir DIR (or set STLM_DATA_DIR) to a folder holding "
            f"{hub.folder}/, or go online once so `datasets` caches it"
        ) from None
    files = [Path(f["filename"]) for f in dataset.cache_files]
    return HubRows(rows=list(dataset), files=files)
