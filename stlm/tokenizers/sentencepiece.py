"""SentencePiece tokenizer in T5's layout, and training a T5-compatible model.

Layout (with the 32,000-piece T5 model and 100 sentinels, vocab_size 32,100):

    0                     PAD  (also the decoder start id)
    1                     EOS  (ends every document; T5 has no BOS)
    2                     UNK
    3..n_pieces-1         the model's pieces
    n_pieces..vocab-1     sentinels counted down from the top:
                          <extra_id_k> = n_pieces + n_sentinels - 1 - k (32099 for k = 0)

The sentinels are not pieces of the SentencePiece model (T5's spiece.model
has none); they are ids appended above it, as Hugging Face's T5Tokenizer
does. `encode` never produces them: a literal "<extra_id_0>" in training text
is tokenized as ordinary text, so a corpus cannot inject control ids. Prompts
are read with `sentinels.encode_marked`, which maps the markup to sentinels
exactly as transformers' T5 tokenizer does.

`sentencepiece` is imported only when a model is loaded or trained.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stlm.errors import UserError
from stlm.tokenizers.sentinels import TopSentinels

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
N_SENTINELS = 100
MODEL_TYPES = ("unigram", "bpe", "char", "word")


# The bytes of every SentencePiece model loaded in this process, by SHA-256: a checkpoint stores
# its run's model from here, so a save still works after the checkpoint the model was loaded from
# has been pruned (a model file is under a few MB; a process loads one or two).
_LOADED: dict[str, bytes] = {}


def loaded_model_bytes(sha256: str) -> bytes | None:
    """The bytes of a SentencePiece model this process has loaded, by SHA-256; None if none was."""
    return _LOADED.get(sha256)


class SentencePieceTokenizer(TopSentinels):
    """A SentencePiece model with T5 specials (pad 0, eos 1, unk 2) and sentinels on top."""

    name = "spiece"
    pad_id = PAD_ID
    eos_id = EOS_ID
    unk_id = UNK_ID
    bos_id = None  # T5 has no BOS: `encode(bos=True)` is accepted and ignored

    def __init__(self, model_file: str | Path, n_sentinels: int = N_SENTINELS) -> None:
        import sentencepiece as spm

        if n_sentinels < 0:
            raise ValueError(f"n_sentinels must be non-negative, got {n_sentinels}")
        path = Path(model_file).expanduser()
        if not path.is_file():
            raise UserError(f"SentencePiece model {path} does not exist: give the path of a .model file")
        data = path.read_bytes()
        try:
            sp = spm.SentencePieceProcessor(model_proto=data)
        except (RuntimeError, OSError) as exc:
            raise UserError(f"{path} is not a SentencePiece model ({exc})") from None
        layout = (sp.pad_id(), sp.eos_id(), sp.unk_id())
        if layout != (PAD_ID, EOS_ID, UNK_ID):
            raise UserError(
                f"SentencePiece model {path} has pad/eos/unk ids {layout}; T5 needs (0, 1, 2): "
                f"train it with stlm's train_sentencepiece or use a T5 spiece.model"
            )
        self._sp = sp
        _LOADED.setdefault(hashlib.sha256(data).hexdigest(), data)
        self._piece_bytes: list[bytes] | None = None  # built on the first decode_bytes
        self.model_file = path.resolve()
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.n_pieces = sp.get_piece_size()
        self.n_sentinels = int(n_sentinels)
        self.vocab_size = self.n_pieces + self.n_sentinels

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        # `bos` is part of the shared tokenizer interface; T5 documents are
        # packed `doc EOS doc EOS`, so it does nothing here.
        ids: list[int] = self._sp.encode(text)
        if eos:
            ids.append(EOS_ID)
        return ids

    def decode(self, ids: Iterable[int], *, sentinels: bool = False) -> str:
        """Text of `ids`, as SentencePiece decodes it; never raises.

        PAD and EOS decode to nothing, UNK to " ⁇ ", ids outside the vocabulary
        are dropped. With `sentinels=True` each sentinel is rendered as
        `<extra_id_k>` (for reading span-corruption examples); otherwise it is
        dropped.
        """
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            i = int(i)
            if 0 <= i < self.n_pieces:
                run.append(i)
                continue
            k = self.sentinel_index(i)
            if sentinels and k is not None:
                parts.append(self._decode_run(run, first=not parts))
                parts.append(f"<extra_id_{k}>")
                run = []
        parts.append(self._decode_run(run, first=not parts))
        return "".join(parts)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """UTF-8 bytes of each piece, concatenated; specials and sentinels give none.

        Unlike `decode` this keeps the space SentencePiece puts before the
        first word, so that pieces decoded one at a time (streaming
        generation) concatenate to the same text with its spaces.
        """
        if self._piece_bytes is None:
            self._piece_bytes = [self._bytes_of(i) for i in range(self.n_pieces)]
        table = self._piece_bytes
        return b"".join(table[i] for i in map(int, ids) if 0 <= i < self.n_pieces)

    def id_to_piece(self, token_id: int) -> str:
        """The piece string of an id ("▁the", "<extra_id_0>", ...)."""
        k = self.sentinel_index(token_id)
        if k is not None:
            return f"<extra_id_{k}>"
        return self._sp.id_to_piece(token_id)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "spec": f"spiece:{self.model_file}",
            "vocab_size": self.vocab_size,
            "n_pieces": self.n_pieces,
            "n_sentinels": self.n_sentinels,
            "model_file": str(self.model_file),
            "sha256": self.sha256,
        }

    def _decode_run(self, run: list[int], *, first: bool) -> str:
        text = self._sp.decode(run)
        # SentencePiece drops the space that starts a run; it is a real space
        # when the run follows a rendered sentinel ("a <extra_id_0> b").
        if not first and run and self._sp.id_to_piece(run[0]).startswith("\u2581") and text:
            text = " " + text
        return text

    def _bytes_of(self, i: int) -> bytes:
        sp = self._sp
        if sp.is_control(i):
            return b""
        if sp.is_unknown(i):
            return " \u2047 ".encode()  # SentencePiece's default surface for UNK
        piece = sp.id_to_piece(i)
        if sp.is_byte(i):
            return bytes([int(piece[3:5], 16)])  # byte-fallback pieces look like <0xE2>
        return piece.replace("\u2581", " ").encode("utf-8")


def train_sentencepiece(
    texts: Iterable[str],
    out_prefix: str | Path,
    vocab_size: int = 8000,
    model_type: str = "unigram",
    *,
    character_coverage: float = 0.9995,
    byte_fallback: bool = False,
    max_sentence_length: int = 1 << 16,
    num_threads: int = 1,
    quiet: bool = True,
    **options: Any,
) -> Path:
    """Train a T5-compatible SentencePiece model; returns the `<out_prefix>.model` path.

    T5-compatible means pad 0, eos 1, unk 2, no BOS, and the NFKC-based
    normalization T5's own spiece.model uses. `vocab_size` counts the pieces
    only; sentinels are added above them by `SentencePieceTokenizer`. Each
    non-empty line of each text is one training sentence (SentencePiece skips
    sentences longer than `max_sentence_length` bytes). `options` go to
    `SentencePieceTrainer.train` unchanged (e.g. `input_sentence_size`,
    `shuffle_input_sentence`, `split_digits`). The model depends on the
    thread count; one thread keeps it the same on every machine, more train
    large corpora faster.
    """
    import sentencepiece as spm

    if model_type not in MODEL_TYPES:
        raise UserError(f"unknown SentencePiece model type {model_type!r}: choose one of {', '.join(MODEL_TYPES)}")
    if vocab_size < 4:
        raise UserError(f"vocab_size must leave room for pad, eos, unk and pieces, got {vocab_size}")
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    lines = _Lines(texts)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=str(out_prefix),
            vocab_size=vocab_size,
            model_type=model_type,
            pad_id=PAD_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            character_coverage=character_coverage,
            byte_fallback=byte_fallback,
            max_sentence_length=max_sentence_length,
            num_threads=num_threads,
            minloglevel=2 if quiet else 0,
            **options,
        )
    except RuntimeError as exc:
        raise UserError(_training_error(exc, lines, vocab_size)) from None
    model = out_prefix.with_name(out_prefix.name + ".model")
    n_pieces = SentencePieceTokenizer(model).n_pieces
    if n_pieces != vocab_size:
        # The char model type stops at the number of distinct characters.
        raise UserError(
            f"SentencePiece made {n_pieces} pieces, not {vocab_size}: the corpus is too small for "
            f"this vocabulary; use vocab_size <= {n_pieces} or more text"
        )
    return model


class _Lines:
    """Non-empty lines of the texts, counted as they stream into the trainer."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = texts
        self.lines = 0
        self.chars = 0

    def __iter__(self) -> Iterator[str]:
        for text in self._texts:
            for line in text.splitlines():
                if line.strip():
                    self.lines += 1
                    self.chars += len(line)
                    yield line


def _training_error(exc: RuntimeError, lines: _Lines, vocab_size: int) -> str:
    message = str(exc)
    if lines.lines == 0:
        return "cannot train a SentencePiece model: the texts hold no non-empty line"
    if "Vocabulary size too high" in message:
        # "... Vocabulary size too high (8000). Please set it to a value <= 1234."
        limit = message.rsplit("<=", 1)[-1].strip(" .") if "<=" in message else "a smaller value"
        return (
            f"the corpus ({lines.lines} lines, {lines.chars} characters) is too small for "
            f"{vocab_size} SentencePiece pieces: use vocab_size <= {limit} or more text"
        )
    return f"SentencePiece training failed: {message}"
