"""Checkpoints: one directory per step, written atomically, verified on load.

    run/checkpoints/step-00000500/
        config.json        the fully resolved run config (run + model + data)
        model.safetensors  weights (tied tensors stored once)
        trainer.pt         optimizer state and RNG states (tensors only, loaded
                           with weights_only=True, so no pickle code runs)
        state.json         step, data-loader position, tokens seen, elapsed time
        spiece.model       the SentencePiece model, for runs that use one (config.json
                           names it relatively: a checkpoint reads no file outside its folder)
        manifest.json      size and SHA-256 of every file above; written last

A checkpoint is built in a hidden temporary directory, every file fsynced,
then renamed into place in one step. A crash (or a full disk) at any moment
leaves either the complete new checkpoint or none, and the previous one
untouched. Only directories named step-NNNNNNNN with a manifest whose sizes
match count as complete.

What reads a run uses its newest checkpoint that verifies (sizes and hashes),
saying so when it passes over a newer one. Pruning removes only checkpoints
older than the one just written, manifest first (a kill midway leaves an
incomplete folder, never a complete-looking damaged one). A run folder has
one writer at a time (`run_lock`), which on taking the lock removes what
killed writers left behind (`remove_leftovers`). Nothing is ever written into
a checkpoint folder after its save (`check_output`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from stlm import registry
from stlm.data.shards import pid_alive
from stlm.errors import UserError, torch_load_message
from stlm.families import ModelFamily
from stlm.tokenizers import SentencePieceTokenizer, Tokenizer, loaded_model_bytes, tokenizer_from_record

CHECKPOINTS_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})$")
_FILES = ("config.json", "model.safetensors", "trainer.pt", "state.json")
SPIECE_FILE = "spiece.model"  # a SentencePiece run's model, copied next to every config.json that names it
# The sections a run record may hold, and the JSON type each must have (RunRecord.from_dict checks them).
_SECTIONS: dict[str, type] = {
    "run": dict,
    "finetune": dict,
    "task": dict,
    "data": dict,
    "header": dict,
    "source": dict,
}


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    config: RunRecord | dict[str, Any],
    state: dict[str, Any],
    keep: int,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint `step` atomically; keep the newest `keep` complete ones.

    `optimizer_state` is an already gathered `optimizer.state_dict()` (FSDP),
    used when `optimizer` is None.
    """
    from safetensors.torch import save_model

    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_model(model, str(tmp / "model.safetensors"))
        trainer = {"rng_cpu": torch.get_rng_state()}
        if optimizer is not None:
            optimizer_state = optimizer.state_dict()
        if optimizer_state is not None:
            trainer["optimizer"] = optimizer_state
        if torch.cuda.is_available():
            trainer["rng_cuda"] = torch.cuda.get_rng_state_all()
        torch.save(trainer, tmp / "trainer.pt")
        data, extra = local_tokenizer_files(config.to_dict() if isinstance(config, RunRecord) else config, tmp)
        _write_json(tmp / "config.json", data)
        _write_json(tmp / "state.json", {"step": step, **state})
        files = (*_FILES, *extra)
        for name in files:
            _fsync(tmp / name)
        manifest = {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)} for name in files}
        _write_json(tmp / "manifest.json", manifest)
        _fsync(tmp / "manifest.json")
        _fsync(tmp)
        if final.exists():  # the same step saved again (e.g. final save after a resume)
            old = root / f".{final.name}.old-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
        _fsync(root)
    except RuntimeError:
        # torch's and safetensors' writers report a failed write (a full disk) as a RuntimeError
        # ("enforce fail at inline_container.cc"): say what it was, as Python's own writes do.
        # Free space is read before the partial files are removed.
        full = _disk_nearly_full(root)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise OSError(errno.ENOSPC, "No space left on device", str(final)) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Pruning removes only checkpoints older than the one just written: never a newer one (a run
    # resumed from an older checkpoint after the newest failed verification leaves it for the user).
    older = [p for p in list_checkpoints(run_dir) if checkpoint_step(p) <= step]
    for stale in older[:-keep]:
        _remove_checkpoint(stale)
    for leftover in root.glob(".step-*"):  # temp dirs of saves that were killed midway
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def checkpoint_step(ckpt: Path) -> int:
    """The step in a checkpoint folder's name (step-00000500 -> 500)."""
    match = _NAME.match(Path(ckpt).name)
    if match is None:
        raise UserError(f"{ckpt} is not a checkpoint folder (expected a name like step-00000500)")
    return int(match.group(1))


def _remove_checkpoint(ckpt: Path) -> None:
    """Delete a checkpoint so that a kill midway leaves a folder no scan counts as complete:
    the manifest goes first (the folder is then incomplete), the rest after."""
    with contextlib.suppress(FileNotFoundError):
        (ckpt / "manifest.json").unlink()
    shutil.rmtree(ckpt, ignore_errors=True)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and _looks_complete(p)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def newest_verified(run_dir: Path, *, say: bool = True) -> Path | None:
    """The newest checkpoint of a run that passes `verify_checkpoint`, or None when there is none.

    Falling back past a newer step folder (incomplete, or complete in size but corrupt) says so
    on stderr, naming the one used: a silent fallback would hide lost training.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    steps = sorted(
        (p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)) if root.is_dir() else [],
        key=checkpoint_step,
        reverse=True,
    )
    skipped: list[str] = []
    for ckpt in steps:
        try:
            verify_checkpoint(ckpt)
        except UserError as exc:
            skipped.append(str(exc))
            continue
        if skipped and say:
            print(f"note: using {ckpt}; newer checkpoints fail verification: {'; '.join(skipped)}", file=sys.stderr)
        return ckpt
    return None


def check_none_saved(run_dir: Path) -> None:
    """A UserError naming what is wrong when a run holds step folders but none verifies."""
    found = sorted((Path(run_dir) / CHECKPOINTS_DIR).glob("step-*"))
    if found:
        verify_checkpoint(found[-1])  # raises, saying what is wrong with the newest
        raise UserError(f"no checkpoint of {run_dir} verifies; nothing was changed")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (its newest verified checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run directory or one of its checkpoints/step-N folders")
    if is_checkpoint(path):
        verify_checkpoint(path)
        return path
    latest = newest_verified(path)
    if latest is None:
        check_none_saved(path)
        raise UserError(f"{path} holds no complete checkpoint (expected {path}/{CHECKPOINTS_DIR}/step-NNNNNNNN/)")
    return latest


def is_checkpoint(path: Path) -> bool:
    """Whether `path` is a checkpoint folder (rather than a run folder holding checkpoints)."""
    path = Path(path)
    return bool(_NAME.match(path.name)) or (path / "manifest.json").exists() or (path / "model.safetensors").exists()


def run_of(ckpt: Path) -> Path | None:
    """The run folder a checkpoint sits in (RUN/checkpoints/step-N -> RUN), None when it stands alone."""
    ckpt = Path(ckpt)
    return ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS_DIR and _NAME.match(ckpt.name) else None


def check_output(out: Path, *, reads: Sequence[Path] = (), what: str = "--out") -> None:
    """A UserError if writing `out` could destroy what a command reads or any checkpoint.

    `out` may not be, or lie inside, a checkpoint folder or a run's checkpoints/ folder, nor be
    one of `reads` (the checkpoints and run folders the command reads), nor a run folder's own
    record (config.json, metrics.jsonl, results.json of a folder being read).
    """
    target = Path(out).resolve()
    for place in (target, *target.parents):
        if _holds_checkpoints(place):
            raise UserError(f"{what} {out} lies inside {place}, which holds checkpoints; choose a folder outside it")
    for read in reads:
        read = Path(read).resolve()
        if target == read:
            raise UserError(f"{what} {out} is the folder this command reads from; choose another")
        if target.parent == read and target.name in RUN_FILES:
            raise UserError(f"{what} {out} would overwrite the run's own {target.name}; choose another name")


def _holds_checkpoints(place: Path) -> bool:
    """A checkpoint folder, or a run's checkpoints/ folder (not any folder that happens to be named so)."""
    if not place.is_dir():
        return False
    if (place / "manifest.json").is_file() or (place / "model.safetensors").is_file():
        return True
    if _NAME.match(place.name) and place.parent.name == CHECKPOINTS_DIR:
        return True
    return place.name == CHECKPOINTS_DIR and (
        (place.parent / "config.json").is_file() or any(_NAME.match(p.name) for p in place.iterdir())
    )


RUN_FILES = ("config.json", "metrics.jsonl", "results.json", "report.md", "state.json", "manifest.json")


def resume_target(path: str | Path) -> Path:
    """The run folder `--resume PATH` continues: PATH itself, or the run holding PATH when PATH is
    that run's newest verified checkpoint. Any other checkpoint is refused: resuming it would
    write over newer ones."""
    path = Path(path)
    if not is_checkpoint(path):
        return path
    run_dir = run_of(path)
    if run_dir is None:
        raise UserError(
            f"{path} is a checkpoint outside a run folder; --resume takes a run folder (RUN) or RUN/checkpoints/step-N"
        )
    newest = newest_verified(run_dir, say=False)
    if newest is None or newest.resolve() != path.resolve():
        verify_checkpoint(path)  # a broken one says what is wrong with it
        raise UserError(
            f"{path} is not the newest checkpoint of its run ({newest.name if newest else 'none verifies'}); "
            f"resuming it would overwrite newer ones: resume the run with --resume {run_dir}, or copy the run first"
        )
    return run_dir


def read_state(ckpt: Path, *, total: int | None = None) -> dict[str, Any]:
    """state.json of a checkpoint, validated: its step is a whole number matching the folder's name
    and within the run's `total` steps (when given). Read before anything is written."""
    state = read_json(Path(ckpt) / "state.json", what="checkpoint state")
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UserError(f"checkpoint {ckpt}: state.json has an impossible step {step!r}; use an earlier checkpoint")
    match = _NAME.match(Path(ckpt).name)
    if match is not None and int(match.group(1)) != step:
        raise UserError(
            f"checkpoint {ckpt}: state.json says step {step}, the folder step {int(match.group(1))}; "
            "use an earlier checkpoint"
        )
    if total is not None and step > total:
        raise UserError(
            f"checkpoint {ckpt}: state.json says step {step}, beyond the run's {total} steps; use an earlier checkpoint"
        )
    return state


def verify_checkpoint(ckpt: Path) -> None:
    """Check every file against the manifest; a clear error names what is wrong."""
    manifest_path = ckpt / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"checkpoint {ckpt} is incomplete (no manifest.json); it was not fully written")
    manifest = read_json(manifest_path, what="checkpoint manifest")
    for name in (*_FILES, *(n for n in manifest if n not in _FILES)):
        if not _plain_name(name):  # the manifest names files to read: only ones in this folder
            raise UserError(f"checkpoint {ckpt}: its manifest names {name!r}, which is not a file in the checkpoint")
        entry = manifest.get(name)
        file = ckpt / name
        if not isinstance(entry, dict) or not file.is_file():
            raise UserError(f"checkpoint {ckpt} is missing {name}")
        if file.stat().st_size != entry.get("bytes"):
            raise UserError(
                f"checkpoint {ckpt}: {name} is {file.stat().st_size} bytes, expected {entry.get('bytes')} "
                "(truncated or replaced); use an earlier checkpoint"
            )
        if _sha256(file) != entry.get("sha256"):
            raise UserError(f"checkpoint {ckpt}: {name} is corrupt (SHA-256 mismatch); use an earlier checkpoint")


def load_config(ckpt: Path) -> dict[str, Any]:
    return read_json(ckpt / "config.json", what="checkpoint config")


def load_weights(model: torch.nn.Module, ckpt: Path) -> None:
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(ckpt / "model.safetensors"), strict=False)
    except Exception as exc:  # safetensors raises its own error types for bad files and shapes
        raise UserError(f"checkpoint {ckpt}: cannot load model.safetensors: {exc}") from None
    if missing or unexpected:
        raise UserError(
            f"checkpoint {ckpt} does not fit the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def load_trainer_state(ckpt: Path, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Restore optimizer and RNG states; returns state.json."""
    trainer = _read_trainer(ckpt)
    if optimizer is not None:
        optimizer.load_state_dict(_optimizer_state(trainer, ckpt))
    torch.set_rng_state(trainer["rng_cpu"])
    if "rng_cuda" in trainer and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(trainer["rng_cuda"])
    return read_json(ckpt / "state.json", what="checkpoint state")


def read_optimizer_state(ckpt: Path) -> dict[str, Any]:
    """The optimizer state_dict stored in a checkpoint (single-process layout)."""
    return _optimizer_state(_read_trainer(ckpt), ckpt)


def _read_trainer(ckpt: Path) -> dict[str, Any]:
    try:
        trainer = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"checkpoint {ckpt}: cannot read trainer.pt: {torch_load_message(exc)}") from None
    if not isinstance(trainer, dict) or not isinstance(trainer.get("rng_cpu"), torch.Tensor):
        raise UserError(f"checkpoint {ckpt}: trainer.pt does not hold stlm's trainer state; use an earlier checkpoint")
    return trainer


def _optimizer_state(trainer: dict[str, Any], ckpt: Path) -> dict[str, Any]:
    if "optimizer" not in trainer:
        raise UserError(f"checkpoint {ckpt} holds no optimizer state; it cannot be resumed")
    return trainer["optimizer"]


def read_json(path: Path, *, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path} is malformed: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} is malformed: expected a JSON object")
    return data


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON next to `path`, fsync, and rename over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _write_json(tmp, data)
    _fsync(tmp)
    tmp.replace(path)


def write_run_config(run_dir: Path, data: dict[str, Any]) -> None:
    """A run folder's config.json (atomically), with the tokenizer files it names copied next to it."""
    data, _ = local_tokenizer_files(data, Path(run_dir))
    write_json_atomic(Path(run_dir) / "config.json", data)


def local_tokenizer_files(data: dict[str, Any], folder: Path) -> tuple[dict[str, Any], list[str]]:
    """`data` (a run record's JSON) as stored in `folder`, and the files copied there for it.

    A SentencePiece tokenizer's model file is copied into `folder` and named relatively, so the
    folder is complete on its own: it still loads when moved, and reading it never needs a path
    outside it. What is stored is the model this process loaded with that SHA-256 (a user's file,
    or one inside a checkpoint, perhaps pruned since), else the file the live tokenizer names.
    """
    tokenizer = data.get("tokenizer")
    if not isinstance(tokenizer, dict) or tokenizer.get("name") != SentencePieceTokenizer.name:
        return data, []
    target = Path(folder) / SPIECE_FILE
    recorded = tokenizer.get("sha256")
    kept = loaded_model_bytes(recorded) if isinstance(recorded, str) else None
    if target.is_symlink():  # write a file of our own, never through a link to somewhere else
        target.unlink()
    if kept is not None:  # the model this process loaded, even if its file was pruned since
        target.write_bytes(kept)
    else:
        spec = tokenizer.get("spec")
        source = Path(tokenizer.get("model_file") or (spec.partition(":")[2] if isinstance(spec, str) else ""))
        if not source.is_absolute() or not source.is_file():
            raise UserError(f"cannot store the SentencePiece model {source}: it is not an existing file")
        if not target.exists() or source.resolve() != target.resolve():
            shutil.copyfile(source, target)
    if recorded not in (None, _sha256(target)):
        raise UserError(f"the SentencePiece model {target} does not match the run's record (SHA-256 mismatch)")
    local = {**tokenizer, "spec": f"spiece:{SPIECE_FILE}"}
    if "model_file" in local:
        local["model_file"] = SPIECE_FILE
    return {**data, "tokenizer": local}, [SPIECE_FILE]


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _looks_complete(ckpt: Path) -> bool:
    """Cheap check used when scanning: a manifest exists and sizes match."""
    try:
        manifest = json.loads((ckpt / "manifest.json").read_text(encoding="utf-8"))
        return all((ckpt / name).stat().st_size == manifest[name]["bytes"] for name in _FILES)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- one writer per run folder -----------------------------------------------------------------

LOCK_FILE = ".stlm.lock"
_held: dict[Path, int] = {}  # run folders this process has locked -> nesting depth (demo -> train)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's writer lock: a second writer gets a UserError naming the holder's pid.

    An advisory `flock` on RUN/.stlm.lock, created with the folder. The kernel drops the lock
    when its holder exits however it exits, so a SIGKILLed writer leaves no stale lock: the
    next one takes it at once. Taking it also removes what killed writers left behind
    (`remove_leftovers`). Re-entrant within a process (the demo locks, then trains).
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        _held[run_dir] += 1
        try:
            yield
        finally:
            _held[run_dir] -= 1
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a+", encoding="utf-8") as fh:  # closing it drops the lock
        if not _try_lock(fh):
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise UserError(
                f"{run_dir} is in use by another stlm process (pid {holder}); wait for it to finish or stop it"
            )
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        _held[run_dir] = 1
        try:
            removed = remove_leftovers(run_dir)
            if removed:
                print(f"removed leftovers of interrupted stlm processes: {', '.join(removed)}", file=sys.stderr)
            yield
        finally:
            del _held[run_dir]
            if created and os.listdir(run_dir) == [LOCK_FILE]:  # refused before writing: leave no folder behind
                (run_dir / LOCK_FILE).unlink()
                run_dir.rmdir()


def _try_lock(fh: Any) -> bool:
    if fcntl is None:  # no flock (Windows): one writer is then the user's care
        return True
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def remove_leftovers(run_dir: Path) -> list[str]:
    """Delete what killed writers left in a run's checkpoints/ (call with the run lock held).

    Temp folders of interrupted saves (.step-N.tmp-PID, .step-N.old-PID) whose process is gone,
    and step folders older than the newest complete checkpoint that are incomplete (a kill while
    pruning deleted part of them). Returns their names.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    removed = []
    for tmp in sorted(root.glob(".step-*")):
        pid = tmp.name.rpartition("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp.name)
    complete = list_checkpoints(run_dir)
    if complete:
        newest = checkpoint_step(complete[-1])
        for half in sorted(p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)):
            if checkpoint_step(half) < newest and not _looks_complete(half):
                shutil.rmtree(half, ignore_errors=True)
                removed.append(f"{half.name} (half deleted)")
    return removed


# --- the run record: what config.json holds, written and read here only -------------------------


@dataclass
class RunRecord:
    """The resolved config stored as config.json in a run folder and in every checkpoint.

    One family row, its model config and the tokenizer are always there;
    `sections` holds what the writer adds ("run" for pretraining, "finetune"
    and "task" for fine-tuning, "source" for an import, "data", "header", ...).
    The JSON layout is {"model_config": {"family": ..., ...}, "tokenizer": {...}, **sections}.
    """

    family: ModelFamily
    model_config: Any
    tokenizer: dict[str, Any]  # a tokenizer's to_dict(), or an import's note when there is none
    sections: dict[str, Any] = field(default_factory=dict)
    # The folder config.json was read from (None: built in memory). Files the record names are
    # looked up inside it or its run folder only: a record read from disk is untrusted data.
    folder: Path | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.sections)
        out["model_config"] = registry.config_to_dict(self.family.name, self.model_config)
        out["tokenizer"] = self.tokenizer
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], folder: Path | None = None) -> RunRecord:
        """The record in a config.json's JSON; a UserError names the first section of the wrong type."""
        where = f"the run config in {folder}" if folder is not None else "the run config"
        if not isinstance(data, dict):
            raise UserError(f"{where} is malformed: expected a JSON object, got {type(data).__name__}")
        sections = dict(data)
        model_config = sections.pop("model_config", {})
        if not isinstance(model_config, dict):
            raise UserError(f"{where} is malformed: model_config must be a table, got {type(model_config).__name__}")
        tokenizer = sections.pop("tokenizer", None) or {"name": "byte"}
        if not isinstance(tokenizer, dict):
            raise UserError(
                f"{where} is malformed: the run record's tokenizer must be a table of settings, "
                f"got {type(tokenizer).__name__}"
            )
        for key in ("name", "spec", "model_file", "sha256", "json"):
            if key in tokenizer and not isinstance(tokenizer[key], str):
                raise UserError(f"{where} is malformed: tokenizer.{key} must be a string, got {tokenizer[key]!r}")
        for key, kind in _SECTIONS.items():
            if key in sections and not isinstance(sections[key], kind):
                raise UserError(
                    f"{where} is malformed: its {key!r} section must be a table, got {type(sections[key]).__name__}"
                )
        try:
            family_name, model_cfg = registry.config_from_dict(model_config)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise UserError(f"{where} is malformed: model_config: {exc}") from None
        return cls(registry.get_family(family_name), model_cfg, tokenizer, sections, folder)

    @property
    def model_name(self) -> str:
        """The preset or model name the run started from (the family name when none was recorded)."""
        for key, field_name in (("run", "model"), ("finetune", "init")):
            value = (self.sections.get(key) or {}).get(field_name)
            if isinstance(value, str) and value:
                return value
        return self.family.name

    def load_tokenizer(self) -> Tokenizer:
        """The tokenizer the run recorded (a BPE record carries its whole tokenizer.json; a
        SentencePiece one names the spiece.model in the record's folder)."""
        if self.folder is None:
            return tokenizer_from_record(self.tokenizer)
        return tokenizer_from_record(self.tokenizer, folder=self.folder, run_dir=run_folder(self.folder))


def run_folder(folder: Path) -> Path:
    """The run folder holding `folder`: a checkpoint's run, or `folder` itself."""
    folder = Path(folder)
    return folder.parent.parent if folder.parent.name == CHECKPOINTS_DIR else folder


def read_record(path: Path) -> RunRecord:
    """The run record in a config.json file (a run folder's or a checkpoint's)."""
    return RunRecord.from_dict(read_json(path, what="run config"), folder=Path(path).parent)


@dataclass
class LoadedRun:
    """A checkpoint ready to use: `load` builds it, everything that reads a checkpoint takes it."""

    model: nn.Module  # in eval mode, on the requested device
    record: RunRecord
    tokenizer: Tokenizer
    path: Path  # the checkpoint directory (checkpoints/step-N)
    step: int

    @property
    def family(self) -> ModelFamily:
        return self.record.family

    @property
    def model_config(self) -> Any:
        return self.record.model_config

    @property
    def run_dir(self) -> Path:
        """The run folder holding this checkpoint (the checkpoint itself when it stands alone)."""
        return run_folder(self.path)


def load(path: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    """A model ready for inference from a checkpoint or run directory (its newest checkpoint)."""
    ckpt = resolve_checkpoint(path)
    record = RunRecord.from_dict(load_config(ckpt), folder=ckpt)
    model = record.family.build(record.model_config)
    load_weights(model, ckpt)
    step = read_json(ckpt / "state.json", what="checkpoint state").get("step", 0)
    return LoadedRun(
        model.to(device).eval(), record, record.load_tokenizer(), ckpt, int(step) if isinstance(step, int) else 0
    )


def _disk_nearly_full(folder: Path, margin: int = 1 << 20) -> bool:
    """Less than `margin` bytes free where `folder` lives."""
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False
