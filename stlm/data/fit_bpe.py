"""A byte-level BPE fitted to a corpus's training split, never its validation split.

`stlm train-tokenizer` and `stlm demo` (for token presets such as bpe-tiny) both
split the documents exactly as `prepare_data` does, so the validation text a
model is scored on was unseen by its tokenizer too.
"""

from __future__ import annotations

from dataclasses import dataclass

from stlm.data.sources import load_documents
from stlm.data.split import split_documents
from stlm.tokenizers.bpe import BPETokenizer, train_bpe


@dataclass
class FittedBPE:
    tokenizer: BPETokenizer
    n_documents: int  # training documents it was fitted on
    n_bytes: int  # their UTF-8 bytes


def fit_bpe(
    source: str,
    vocab_size: int,
    *,
    val_fraction: float = 0.05,
    seed: int = 0,
    text_field: str = "text",
    cache_dir: str | None = None,
    min_frequency: int = 2,
) -> FittedBPE:
    """Train a BPE of exactly `vocab_size` ids (PAD/BOS/EOS included) on the training split of `source`."""
    docs = load_documents(source, text_field=text_field, cache_dir=cache_dir)
    train_docs, _ = split_documents(docs, val_fraction=val_fraction, seed=seed)
    tokenizer = train_bpe(train_docs, vocab_size, min_frequency=min_frequency)
    n_bytes = sum(len(d.encode("utf-8")) for d in train_docs)
    return FittedBPE(tokenizer=tokenizer, n_documents=len(train_docs), n_bytes=n_bytes)
