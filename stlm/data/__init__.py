"""The data path: corpora -> documents -> train/val split -> token shards -> batches.

docs = load_documents("pydocs")                    # sources.py
train, val = split_documents(docs)                 # split.py
data = prepare_data("pydocs", ByteTokenizer(), cache_dir=...)   # shards.py (does both, cached)
loader = WindowLoader(data.train, seq_len=256, batch_size=16, seed=0)   # loader.py
"""

from stlm.data.fit_bpe import FittedBPE, fit_bpe
from stlm.data.loader import WindowLoader
from stlm.data.pydocs import DocstringRecord, iter_pydoc_docstrings
from stlm.data.shards import PreparedData, cached_data, load_prepared, prepare_data, unigram_bits_per_byte
from stlm.data.sources import CorpusInfo, corpus_fingerprint, list_corpora, load_documents, local_path
from stlm.data.split import split_documents

__all__ = [
    "CorpusInfo",
    "DocstringRecord",
    "FittedBPE",
    "PreparedData",
    "WindowLoader",
    "cached_data",
    "corpus_fingerprint",
    "fit_bpe",
    "iter_pydoc_docstrings",
    "list_corpora",
    "load_documents",
    "load_prepared",
    "local_path",
    "prepare_data",
    "split_documents",
    "unigram_bits_per_byte",
]
