"""The teacher's outputs kept on disk, so later epochs read them back instead of running the teacher again.

    DIR/<key>/manifest.json        what the key stands for (teacher weights sha256, temperature, kept ids,
                                   precision, vocabulary, objective), in plain JSON
    DIR/<key>/rows/ab/ab12...kd    one file per training row (a window, a fine-tuning example)

What is stored. For each row of a batch, the teacher's log-probabilities at
temperature T at the row's scored positions (targets != -100), in one of two
forms (`topk`):

    topk = 0   all V ids                     (n, V) values
    topk = K   the K most likely ids         (n, K) values + (n, K) indices (uint16, or uint32 past 65,536 ids);
               the rest of the mass, r = 1 - sum of the K probabilities, spread evenly over the other V - K ids

in fp32 (bit for bit the live teacher's) or fp16 (half the size; log-probs
to about 3 significant digits). The loss always reads the stored form, on the
first epoch too (the live output goes through the same encode and decode), so
a run gives the same losses whether a row came from the teacher or the disk,
and a resumed run equals an uninterrupted one however much of the cache
exists. With top-K, for the forward KL, per position:

    |KL(t || s) - KL(t_K || s)|  <=  r * (log(V - K) + spread of log s over the V - K other ids)

(the tail's own entropy differs by at most r log(V - K); the tail mass moved
between ids is at most 2r and meets log s, whose spread bounds the change).

Keys. The folder name is the sha256 of the teacher's weights hash, the
temperature, K, the precision, the vocabulary and the objective kind: another
teacher or temperature lands in another folder and never reads this one (the
store says so when it finds such folders). A row file is named by the sha256
of the row's own ids (every tensor of the row, trailing padding cut, so the
same example padded to another batch width finds its file): other data or
another window cut simply finds no file. The header of every file repeats
both keys and the shapes, and a file is used only when all of them match and
its length is exact; anything else counts as rejected and is recomputed and
replaced. No pickle: a fixed magic, a JSON header, raw little-endian arrays.

Writes are atomic (a temporary file in the same folder, then a rename), so a
killed run leaves whole files or none, and ranks under torchrun share one
folder safely: rows are content-addressed, independent of world size and of
which rank computed them. (On several nodes without a shared filesystem each
node keeps its own folder; that only costs teacher passes.)
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stlm.errors import UserError

MAGIC = b"STLMKD1\n"
FORMAT = 1
DTYPES = {"fp16": np.float16, "fp32": np.float32}


def cache_key(
    *, teacher_sha256: str, temperature: float, topk: int, dtype: str, vocabulary: dict[str, Any], objective: str
) -> dict[str, Any]:
    """What a stored teacher output depends on, besides the row's own ids."""
    return {
        "format": FORMAT,
        "teacher_weights_sha256": teacher_sha256,
        "temperature": float(temperature),
        "topk": int(topk),
        "dtype": dtype,
        "vocabulary": vocabulary,
        "objective": objective,
    }


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def row_hash(tensors: tuple[torch.Tensor, ...], row: int, pad_values: tuple[int, ...]) -> str:
    """sha256 of one row's ids across the batch's tensors, trailing padding (`pad_values`) cut from each."""
    h = hashlib.sha256()
    for t in tensors:
        ids = t[row].reshape(-1).cpu().numpy().astype("<i8")
        end = len(ids)
        while end > 0 and ids[end - 1] in pad_values:
            end -= 1
        h.update(struct.pack("<q", end))
        h.update(ids[:end].tobytes())
    return h.hexdigest()


@dataclass
class Encoded:
    values: np.ndarray  # (n, V) or (n, K) in fp16/fp32
    indices: np.ndarray | None  # (n, K) uint16/uint32 with top-K, else None


@dataclass
class TeacherCache:
    """Teacher log-probs at temperature T per training row, stored under `root` (see the module doc)."""

    root: Path
    key: dict[str, Any]
    vocab_size: int
    pad_values: tuple[int, ...]
    hits: int = 0
    misses: int = 0
    rejected: int = 0
    teacher_calls: int = 0
    bytes_written: int = 0
    digest: str = field(init=False)
    folder: Path = field(init=False)

    def __post_init__(self) -> None:
        if self.topk >= self.vocab_size:
            raise UserError(f"--kd-topk {self.topk} keeps every id of a {self.vocab_size}-id vocabulary: use 0")
        self.digest = _digest(self.key)
        self.folder = Path(self.root) / self.digest[:16]  # created on the first write: nothing before training
        if Path(self.root).exists() and not Path(self.root).is_dir():
            raise UserError(f"--kd-cache {self.root} is a file; name a folder")

    @property
    def topk(self) -> int:
        return int(self.key["topk"])

    @property
    def dtype(self) -> str:
        return str(self.key["dtype"])

    # --- what the user sees ---

    def others(self) -> list[str]:
        """One line per folder in `root` made for another key (another teacher, temperature, K, precision...)."""
        lines = []
        for manifest in sorted(Path(self.root).glob("*/manifest.json")):
            if manifest.parent == self.folder:
                continue
            try:
                other = json.loads(manifest.read_text())
                what = (
                    f"teacher sha256 {str(other.get('teacher_weights_sha256'))[:12]}..., T={other.get('temperature')}, "
                    f"top-k {other.get('topk')}, {other.get('dtype')}, {other.get('objective')}"
                )
            except (OSError, ValueError, AttributeError):
                what = "an unreadable manifest"
            lines.append(f"{manifest.parent.name} ({what})")
        return lines

    def size_bytes(self) -> tuple[int, int]:
        """(row files, bytes) under this key's folder."""
        files = list((self.folder / "rows").glob("*/*.kd"))
        return len(files), sum(f.stat().st_size for f in files)

    def describe(self) -> str:
        files, size = self.size_bytes()
        form = f"top-{self.topk}" if self.topk else "all ids"
        return (
            f"kd cache {self.folder}: {files} rows, {size / 2**20:.1f} MiB ({form}, {self.dtype}); this run "
            f"{self.hits} rows read, {self.misses} computed, {self.rejected} rejected; {self.teacher_calls} teacher passes"
        )

    def announce(self, progress: bool) -> None:
        if not progress:
            return
        files, size = self.size_bytes()
        print(f"  kd cache {self.folder}: {files} rows stored, {size / 2**20:.1f} MiB", file=sys.stderr)
        for line in self.others():
            print(f"  kd cache: {line} was made for another teacher or settings; not read", file=sys.stderr)

    # --- the stored form ---

    def encode(self, logp: torch.Tensor) -> Encoded:
        """(n, V) fp32 log-probs -> the stored form."""
        logp = logp.detach().float().cpu()
        np_dtype = DTYPES[self.dtype]
        if not self.topk:
            return Encoded(logp.numpy().astype(np_dtype), None)
        values, indices = logp.topk(self.topk, dim=-1)  # (n, K), (n, K)
        index_dtype = np.uint16 if self.vocab_size <= 2**16 else np.uint32
        return Encoded(values.numpy().astype(np_dtype), indices.numpy().astype(index_dtype))

    def decode(self, enc: Encoded) -> torch.Tensor:
        """The stored form -> (n, V) fp32 log-probs (the distribution the loss compares with)."""
        values = torch.from_numpy(enc.values.astype(np.float32))
        if enc.indices is None:
            # fp32: the teacher's own values, bit for bit; fp16: renormalised after rounding.
            return values if self.dtype == "fp32" else F.log_softmax(values, dim=-1)
        kept = values.exp().sum(-1, keepdim=True)  # (n, 1)
        rest = (1.0 - kept).clamp(min=1e-12) / (self.vocab_size - self.topk)  # the tail's even share, per id
        out = rest.log().expand(-1, self.vocab_size).clone()  # (n, V)
        out.scatter_(1, torch.from_numpy(enc.indices.astype(np.int64)), values)
        return F.log_softmax(out, dim=-1)

    # --- files ---

    def _path(self, row: str) -> Path:
        return self.folder / "rows" / row[:2] / f"{row}.kd"

    def read(self, row: str, positions: int) -> Encoded | None:
        """The stored row, or None when absent or failing any check (counted in `rejected`)."""
        path = self._path(row)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        enc = self._parse(blob, row, positions)
        if enc is None:
            self.rejected += 1
        return enc

    def _parse(self, blob: bytes, row: str, positions: int) -> Encoded | None:
        if len(blob) < len(MAGIC) + 4 or not blob.startswith(MAGIC):
            return None
        (n_header,) = struct.unpack_from("<I", blob, len(MAGIC))
        start = len(MAGIC) + 4 + n_header
        try:
            header = json.loads(blob[len(MAGIC) + 4 : start])
        except ValueError:
            return None
        k = self.topk or self.vocab_size
        expect = {
            "key": self.digest,
            "row": row,
            "positions": positions,
            "vocab": self.vocab_size,
            "topk": self.topk,
            "dtype": self.dtype,
        }
        if not isinstance(header, dict) or any(header.get(name) != value for name, value in expect.items()):
            return None
        value_dtype = np.dtype(DTYPES[self.dtype]).newbyteorder("<")
        index_dtype = np.dtype(np.uint16 if self.vocab_size <= 2**16 else np.uint32).newbyteorder("<")
        n_values = positions * k * value_dtype.itemsize
        n_indices = positions * k * index_dtype.itemsize if self.topk else 0
        if len(blob) != start + n_values + n_indices:
            return None
        values = np.frombuffer(blob, dtype=value_dtype, count=positions * k, offset=start).reshape(positions, k)
        indices = None
        if self.topk:
            indices = np.frombuffer(blob, dtype=index_dtype, count=positions * k, offset=start + n_values)
            indices = indices.reshape(positions, k)
            if positions and int(indices.max()) >= self.vocab_size:
                return None
        if np.isnan(values).any() or (values == np.inf).any():  # -inf is a log-prob of 0; NaN or +inf is not
            return None
        return Encoded(values, indices)

    def write(self, row: str, enc: Encoded) -> None:
        header = {
            "key": self.digest,
            "row": row,
            "positions": int(enc.values.shape[0]),
            "vocab": self.vocab_size,
            "topk": self.topk,
            "dtype": self.dtype,
        }
        head = json.dumps(header, sort_keys=True).encode()
        parts = [MAGIC, struct.pack("<I", len(head)), head, enc.values.astype(enc.values.dtype.newbyteorder("<"))]
        if enc.indices is not None:
            parts.append(enc.indices.astype(enc.indices.dtype.newbyteorder("<")))
        blob = b"".join(p if isinstance(p, bytes) else p.tobytes() for p in parts)
        path = self._path(row)
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            manifest = self.folder / "manifest.json"
            if not manifest.exists():
                text = json.dumps({**self.key, "key": self.digest}, indent=1, sort_keys=True)
                _write_atomic(manifest, text.encode())
        _write_atomic(path, blob)
        self.bytes_written += len(blob)

    # --- what the loss reads ---

    def teacher_logprobs(
        self, tensors: tuple[torch.Tensor, ...], scored: torch.Tensor, run_teacher: Callable[[], torch.Tensor]
    ) -> torch.Tensor:
        """(B, T, V) teacher log-probs in their stored form at the scored positions (B, T); the teacher runs
        (`run_teacher` -> (B, T, V) fp32 log-probs) only when a row is not stored. Unscored positions hold
        an even distribution (finite; the loss weighs them 0)."""
        batch, width = scored.shape
        counts = scored.sum(-1).tolist()
        rows = [row_hash(tensors, i, self.pad_values) for i in range(batch)]
        stored = [self.read(r, n) for r, n in zip(rows, counts)]
        if any(s is None for s in stored):
            self.teacher_calls += 1
            live = run_teacher()  # (B, T, V)
            for i, enc in enumerate(stored):
                if enc is None:
                    stored[i] = self.encode(live[i][scored[i]])  # (n_i, V) -> stored form
                    self.write(rows[i], stored[i])
                    self.misses += 1
                else:
                    self.hits += 1
        else:
            self.hits += batch
        out = torch.full((batch, width, self.vocab_size), -float(np.log(self.vocab_size)), device=scored.device)
        for i, enc in enumerate(stored):
            out[i, scored[i]] = self.decode(enc).to(scored.device)
        return out


def _write_atomic(path: Path, blob: bytes) -> None:
    """Whole or absent: write beside, then rename (atomic on one filesystem; concurrent writers of one name are fine)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
