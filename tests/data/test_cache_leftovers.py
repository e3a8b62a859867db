"""Unfinished token cache folders of killed prepare runs are removed by the next prepare, which says so."""

import os
import subprocess
import sys

from stlm.data import prepare_data
from stlm.data.shards import cache_key
from stlm.data.sources import corpus_fingerprint, load_documents
from stlm.tokenizers import ByteTokenizer


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_prepare_leftovers_are_removed_and_live_ones_kept(tmp_path, corpus_dir, capsys):
    tokenizer = ByteTokenizer()
    key = cache_key(corpus_fingerprint(load_documents(str(corpus_dir))), tokenizer, val_fraction=0.1, seed=0)
    tokens = tmp_path / "cache" / "tokens"
    dead = tokens / f".{key}.tmp-{_dead_pid()}-abcd1234"
    live = tokens / f".{key}.tmp-{os.getpid()}-efgh5678"
    other = tokens / f".{'0' * 32}.tmp-{_dead_pid()}-ijkl9012"  # another cache's: not this prepare's business
    for folder in (dead, live, other):
        folder.mkdir(parents=True)
        (folder / "train.bin").write_bytes(b"\0" * 1024)
    data = prepare_data(str(corpus_dir), tokenizer, cache_dir=tmp_path / "cache", val_fraction=0.1, seed=0)
    assert len(data.train) > 0
    err = capsys.readouterr().err
    assert "removed 1 unfinished token cache folder" in err and dead.name in err
    assert not dead.exists() and live.is_dir() and other.is_dir()
