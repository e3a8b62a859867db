"""Tokenizers. The byte tokenizers need nothing; SentencePiece is imported lazily.

`load_tokenizer(spec)` turns a spec string into a tokenizer:

    "byte"          ByteTokenizer: bytes 0-255, PAD/BOS/EOS above (decoder family)
    "byt5"          ByT5Tokenizer: bytes + 3 under T5's pad 0 / eos 1 / unk 2
    "spiece:PATH"   SentencePieceTokenizer: a T5-layout SentencePiece model file
    "bpe:PATH"      BPETokenizer: a byte-level BPE tokenizer.json (`stlm train-tokenizer` writes one)

`tokenizer_from_record(record, folder=..., run_dir=...)` rebuilds the tokenizer a
checkpoint recorded (its `to_dict()`); a BPE record carries its whole
tokenizer.json, a SentencePiece record names the spiece.model copied into the
checkpoint. A record read from disk is untrusted data: the file it names must
lie inside the folder it was read from or that folder's run folder.
"""

from __future__ import annotations

from pathlib import Path

from stlm.errors import UserError
from stlm.tokenizers.bpe import BPETokenizer, train_bpe
from stlm.tokenizers.byt5 import ByT5Tokenizer
from stlm.tokenizers.byte import ByteTokenizer
from stlm.tokenizers.sentencepiece import SentencePieceTokenizer, loaded_model_bytes, train_sentencepiece

Tokenizer = ByteTokenizer | ByT5Tokenizer | SentencePieceTokenizer | BPETokenizer

_SPIECE = "spiece:"
_BPE = "bpe:"


def load_tokenizer(spec: str) -> Tokenizer:
    """The tokenizer a spec string names (see the module docstring)."""
    if spec == "byte":
        return ByteTokenizer()
    if spec == "byt5":
        return ByT5Tokenizer()
    if spec.startswith(_SPIECE):
        path = spec[len(_SPIECE) :]
        if not path:
            raise UserError("tokenizer spec 'spiece:' needs a model file: 'spiece:PATH/TO/spiece.model'")
        return SentencePieceTokenizer(path)
    if spec.startswith(_BPE):
        path = spec[len(_BPE) :]
        if not path:
            raise UserError("tokenizer spec 'bpe:' needs a tokenizer file: 'bpe:PATH/TO/tokenizer.json'")
        return BPETokenizer.from_file(path)
    raise UserError(
        f"unknown tokenizer {spec!r}: use 'byte', 'byt5', 'spiece:PATH' (a SentencePiece model file) "
        "or 'bpe:PATH' (a byte-level BPE tokenizer.json)"
    )


def tokenizer_from_record(record: dict | None, *, folder: Path | None = None, run_dir: Path | None = None) -> Tokenizer:
    """The tokenizer a checkpoint recorded (a `to_dict()`); no record means the byte tokenizer.

    `folder`: the folder the record was read from (a checkpoint, or a run folder), None for a record
    built in memory from a live tokenizer. With a folder, a SentencePiece file is looked up inside
    `folder` or `run_dir` only (see `_inside`), and a BPE record must embed its JSON.
    """
    record = record or {"name": "byte"}
    if record.get("name") == BPETokenizer.name and "json" in record:
        if not isinstance(record["json"], str):
            raise UserError("the checkpoint's BPE tokenizer record is malformed: its json must be a string")
        tokenizer = BPETokenizer(record["json"], source="the checkpoint's tokenizer record")
        if record.get("sha256") not in (None, tokenizer.sha256):
            raise UserError("the checkpoint's BPE tokenizer record is corrupt (SHA-256 mismatch)")
        return tokenizer
    spec = record.get("spec") or record.get("name") or "byte"
    if not isinstance(spec, str):
        raise UserError(f"the checkpoint's tokenizer record is malformed: its spec must be a string, got {spec!r}")
    if folder is None:
        return load_tokenizer(spec)
    if spec.startswith(_BPE):
        raise UserError(
            "the checkpoint's tokenizer record names a BPE file instead of embedding it; "
            "a checkpoint reads no file outside its folder: retrain, or rebuild the record with `stlm train`"
        )
    if not spec.startswith(_SPIECE):
        return load_tokenizer(spec)
    path = _inside(spec[len(_SPIECE) :], Path(folder), Path(run_dir) if run_dir is not None else Path(folder))
    tokenizer = SentencePieceTokenizer(path)
    if record.get("sha256") not in (None, tokenizer.sha256):
        raise UserError(f"the checkpoint's SentencePiece model {path} is corrupt (SHA-256 mismatch)")
    return tokenizer


def _inside(name: str, folder: Path, run_dir: Path) -> Path:
    """The file a record names, found inside `folder` or `run_dir` (symlinks resolved).

    A relative name is looked up in `folder`; an absolute one is accepted when it lies inside the run
    folder. Runs imported before tokenizer files were copied into checkpoints record the absolute path
    of the run folder's spiece.model: when that run folder has moved, the file of the same name in the
    checkpoint or the run folder is the one meant. Anything else is refused: a checkpoint is untrusted
    data and may not make stlm read a file outside its own folder.
    """
    roots = [folder.resolve(), run_dir.resolve()]
    given = Path(name)
    candidates = [given] if given.is_absolute() else [folder / given]
    candidates += [folder / given.name, run_dir / given.name]
    for candidate in candidates:
        resolved = candidate.resolve()
        if resolved.is_file() and any(resolved.is_relative_to(root) for root in roots):
            return resolved
    raise UserError(
        f"the tokenizer record in {folder} names {name}, which is not a file inside its run folder {run_dir}; "
        "a checkpoint may only use files in its own folder: re-import the model with `stlm hf-import` "
        f"(or copy that spiece.model into {run_dir})"
    )


__all__ = [
    "BPETokenizer",
    "ByT5Tokenizer",
    "ByteTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "load_tokenizer",
    "loaded_model_bytes",
    "tokenizer_from_record",
    "train_bpe",
    "train_sentencepiece",
]
