from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stlm.data import WindowLoader
from stlm.errors import UserError

# Token i has value i, so every window shows where it was cut from.
TOKENS = np.arange(5_000, dtype=np.int64)


def _take(loader: WindowLoader, n: int) -> list[torch.Tensor]:
    return [loader.next_batch() for _ in range(n)]


def test_batches_are_contiguous_windows() -> None:
    loader = WindowLoader(TOKENS, seq_len=16, batch_size=4, seed=0)
    batch = loader.next_batch()
    assert batch.shape == (4, 17) and batch.dtype == torch.int64
    for row in batch:
        assert torch.equal(row, torch.arange(int(row[0]), int(row[0]) + 17))


def test_an_epoch_is_a_permutation_of_non_overlapping_windows() -> None:
    loader = WindowLoader(TOKENS, seq_len=16, batch_size=4, seed=7)
    n = loader.windows_per_epoch
    starts = torch.cat([b[:, 0] for b in _take(loader, n // 4)]).numpy()
    assert loader.epoch == 0
    offset = int(starts.min()) % 17
    assert len(set(starts.tolist())) == len(starts) == 4 * (n // 4)
    assert all((s - offset) % 17 == 0 for s in starts)  # one grid: windows never overlap
    assert n == (len(TOKENS) - offset) // 17
    loader.next_batch()
    assert loader.epoch == 1


def test_same_seed_same_batches_other_seed_other_batches() -> None:
    a = _take(WindowLoader(TOKENS, 32, 8, seed=1), 50)
    b = _take(WindowLoader(TOKENS, 32, 8, seed=1), 50)
    c = _take(WindowLoader(TOKENS, 32, 8, seed=2), 50)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_resume_equals_uninterrupted_across_epochs() -> None:
    small = TOKENS[:1_000]  # 29 windows of 33: several epochs in 40 batches of 4
    straight = _take(WindowLoader(small, 32, 4, seed=5), 40)
    first = WindowLoader(small, 32, 4, seed=5)
    head = _take(first, 20)
    state = json.loads(json.dumps(first.state_dict()))
    assert state["epoch"] > 0 and set(state) == {"seed", "epoch", "index", "seq_len", "batch_size"}
    resumed = WindowLoader(small, 32, 4, seed=999)  # the saved seed wins
    resumed.load_state_dict(state)
    tail = _take(resumed, 20)
    assert all(torch.equal(x, y) for x, y in zip(straight, head + tail))


def test_resume_checks_shape_settings() -> None:
    state = WindowLoader(TOKENS, 32, 4, seed=0).state_dict()
    with pytest.raises(UserError, match="seq_len"):
        WindowLoader(TOKENS, 64, 4, seed=0).load_state_dict(state)
    with pytest.raises(UserError, match="batch_size"):
        WindowLoader(TOKENS, 32, 8, seed=0).load_state_dict(state)


def test_ranks_take_disjoint_windows_that_add_up_to_one_rank() -> None:
    world = 3
    ranks = [WindowLoader(TOKENS, 16, 2, seed=3, rank=r, world_size=world) for r in range(world)]
    single = WindowLoader(TOKENS, 16, 2 * world, seed=3)
    for _ in range(30):
        batches = [r.next_batch() for r in ranks]
        starts = [set(b[:, 0].tolist()) for b in batches]
        assert sum(len(s) for s in starts) == len(set().union(*starts))  # no window on two ranks
        assert set().union(*starts) == set(single.next_batch()[:, 0].tolist())
    assert len({json.dumps(r.state_dict()) for r in ranks}) == 1


def test_too_small_corpus_is_a_user_error() -> None:
    with pytest.raises(UserError, match="too small for seq_len=64"):
        WindowLoader(np.arange(50, dtype=np.uint16), seq_len=64, batch_size=1, seed=0)
    with pytest.raises(UserError, match="too small"):
        WindowLoader(np.arange(300, dtype=np.uint16), seq_len=64, batch_size=4, seed=0, world_size=2)


def test_uint16_memmap_input(tmp_path) -> None:
    path = tmp_path / "t.bin"
    np.arange(2_000, dtype=np.uint16).tofile(path)
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    batch = WindowLoader(tokens, 8, 2, seed=0).next_batch()
    assert batch.dtype == torch.int64 and torch.equal(batch[0], torch.arange(int(batch[0, 0]), int(batch[0, 0]) + 9))
