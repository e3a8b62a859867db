"""Shared fixtures: a small real-text corpus, a private cache, a tiny trained run."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _private_user_cache() -> None:
    """Point stlm's user cache folder at a fresh folder for this test session, so no test reads
    what the user's own runs cached there (corpora, token shards, the precision probe). Its probe
    file gives fp32 and bf16 the same time for both purposes, so `--precision auto` means fp32 on
    a CPU in every test, whichever CPU runs them: the tests compare against fp32 references. The
    probe's own tests pass their own cache files and timings."""
    import atexit
    import json
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="stlm-tests-cache-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    os.environ["XDG_CACHE_HOME"] = root
    from stlm.runtime import PROBE_CACHE, cache_folder, machine_key

    same = {"fp32_s": 1.0, "bf16_s": 1.0, "measured": "pinned by tests/conftest.py"}
    cache_folder().mkdir(parents=True)
    (cache_folder() / PROBE_CACHE).write_text(json.dumps({machine_key(): {"train": same, "generate": same}}))


_private_user_cache()

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """40 documents of real English prose (Python's own help topics), ~1 MB."""
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("corpus")
    for i, key in enumerate(sorted(topics)[:40]):
        (root / f"{i:02d}-{key}.txt").write_text(topics[key], encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def tiny_config(corpus_dir: Path, cache_dir: Path, **train):
    from stlm.config import DataConfig, OptimConfig, RunConfig, RuntimeConfig, TrainConfig

    settings = dict(steps=8, batch_size=4, eval_every=0, save_every=0, log_every=2, eval_tokens=2048)
    settings.update(train)
    return RunConfig(
        model="decoder-tiny",
        data=DataConfig(source=str(corpus_dir), seq_len=64, cache_dir=str(cache_dir)),
        optim=OptimConfig(lr=3e-3, warmup_steps=2),
        train=TrainConfig(**settings),
        runtime=RuntimeConfig(device="cpu", precision="fp32"),
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, corpus_dir, cache_dir) -> Path:
    """A decoder-tiny run trained for a few steps; shared by evaluate/generate tests."""
    from stlm.training.loop import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(corpus_dir, cache_dir), run, progress=False)
    return run


@pytest.fixture(scope="session")
def decoder_export_run(tmp_path_factory) -> Path:
    """The tiny random decoder run the export tests convert (tests/interop/export_runs.py); tests only read it."""
    from tests.interop.export_runs import decoder_run

    return decoder_run(tmp_path_factory.mktemp("export-runs"))


@pytest.fixture(scope="session")
def t5_export_run(tmp_path_factory) -> Path:
    """The tiny random byte-T5 run the export tests convert (tests/interop/export_runs.py); tests only read it."""
    from tests.interop.export_runs import t5_run

    return t5_run(tmp_path_factory.mktemp("export-runs"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for tiny-model tests.

    With two threads every small op waits for the second thread to be
    scheduled, and on a busy 2-core machine that wait (milliseconds) dwarfs the
    op itself. Tiny models gain nothing from a second thread; the setting is
    restored afterwards.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def seeded_model(name: str):
    """(family, model) of a preset built with seed 0, in eval mode."""
    import torch

    from stlm import registry

    torch.manual_seed(0)
    family, cfg = registry.get_config(name)
    return family, registry.build_model(family, cfg).eval()


@pytest.fixture
def full_disk(monkeypatch):
    """full_disk(owner, name, on_call=None) makes `owner.name` raise ENOSPC as a full disk does: on
    every call, or with on_call=N on the N-th only (the others run as before). Returns the original,
    to put back mid-test with monkeypatch.setattr; undone at the end of the test in any case."""

    def fill(owner, name: str, *, on_call: int | None = None):
        real, calls = getattr(owner, name), {"n": 0}

        def no_space(*args, **kwargs):
            calls["n"] += 1
            if on_call is None or calls["n"] == on_call:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, no_space)
        return real

    return fill
