"""Batches of random token windows from a packed token array, resumable exactly.

Each epoch e draws, from `np.random.default_rng([seed, e])`, an offset in
[0, seq_len) and a permutation of the non-overlapping windows of seq_len + 1
tokens that fit after it. The random offset means the token pair lost at each
window boundary differs from epoch to epoch. Windows are served in permutation
order; rank r of w takes positions r, r + w, r + 2w, ... so ranks never share
a window. A step consumes batch_size * w positions; when fewer than that are
left, the rest of the epoch is skipped and the next epoch begins.

The whole state is (seed, epoch, index into the permutation), identical on
every rank, so a checkpoint written by rank 0 resumes all of them, on any
number of ranks with the same global batch (batch_size x world_size).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from stlm.errors import UserError


class WindowLoader:
    """Yields `torch.LongTensor` batches of shape (B, seq_len + 1).

    The training code splits a batch into inputs `[:, :-1]` and targets `[:, 1:]`.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        seq_len: int,
        batch_size: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        fixed_offset: bool = False,
    ) -> None:
        if seq_len < 1 or batch_size < 1:
            raise UserError(f"seq_len and batch_size must be at least 1, got {seq_len} and {batch_size}")
        if seed < 0:
            raise UserError(f"the data seed must be a non-negative integer, got {seed}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.tokens = tokens
        self.seq_len = int(seq_len)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.fixed_offset = fixed_offset  # every epoch cuts epoch 0's windows (in a new order)
        self._span = self.seq_len + 1  # tokens per window (T + 1): inputs and shifted targets
        # The largest offset, seq_len - 1, leaves the fewest windows; every
        # epoch must still fill one step on every rank.
        fewest = max(len(tokens) - (self.seq_len - 1), 0) // self._span
        needed = self.batch_size * self.world_size
        if fewest < needed:
            raise UserError(
                f"the corpus is too small for seq_len={self.seq_len}: {len(tokens)} tokens give "
                f"{fewest} windows of {self._span} tokens per epoch, and one step needs {needed} "
                f"(batch {self.batch_size} x {self.world_size} ranks); use a shorter seq_len, a "
                f"smaller batch or more text"
            )
        self.epoch = 0
        self.index = 0  # next permutation position of this epoch, counted over all ranks
        self._plan: tuple[tuple[int, int], int, np.ndarray] | None = None  # ((seed, epoch), offset, order)

    @property
    def windows_per_epoch(self) -> int:
        """Windows in the current epoch, all ranks together (varies by one with the offset)."""
        return len(self._epoch_plan()[1])

    def next_batch(self) -> torch.Tensor:
        step = self.batch_size * self.world_size
        offset, order = self._epoch_plan()
        if self.index + step > len(order):
            self.epoch += 1
            self.index = 0
            offset, order = self._epoch_plan()
        positions = self.index + self.rank + self.world_size * np.arange(self.batch_size)
        starts = offset + order[positions] * self._span  # (B,)
        batch = self.tokens[starts[:, None] + np.arange(self._span)]  # (B, T + 1)
        self.index += step
        return torch.from_numpy(batch.astype(np.int64))

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        return self.next_batch()

    def state_dict(self) -> dict[str, int]:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "index": self.index,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size * self.world_size,  # the global batch: any world size resumes it
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where the loader that wrote `state` stopped."""
        missing = [k for k in ("seed", "epoch", "index", "seq_len", "batch_size") if k not in state]
        if missing:
            raise UserError(f"the data loader state lacks {', '.join(missing)}: the checkpoint is damaged")
        current = {"seq_len": self.seq_len, "batch_size": self.batch_size * self.world_size}
        for name, value in current.items():
            if int(state[name]) != value:
                raise UserError(
                    f"the data loader state was saved with {name}={state[name]}, this run has "
                    f"{name}={value}: resume with the same {name}"
                )
        old = (self.seed, self.epoch, self.index)
        self.seed, self.epoch, self.index = int(state["seed"]), int(state["epoch"]), int(state["index"])
        if not 0 <= self.index <= self.windows_per_epoch:
            self.seed, self.epoch, self.index = old
            raise UserError(
                f"the data loader state (epoch {state['epoch']}, index {state['index']}) does not "
                f"fit this corpus of {len(self.tokens)} tokens: resume on the data it was saved with"
            )

    def _epoch_plan(self) -> tuple[int, np.ndarray]:
        """(offset, window order) of the current epoch, computed once per epoch."""
        if self._plan is None or self._plan[0] != (self.seed, self.epoch):
            rng = np.random.default_rng([self.seed, self.epoch])
            offset = int(rng.integers(0, self.seq_len))
            if self.fixed_offset:  # the same draws either way: only the offset differs
                offset = int(np.random.default_rng([self.seed, 0]).integers(0, self.seq_len))
            n_windows = (len(self.tokens) - offset) // self._span
            self._plan = ((self.seed, self.epoch), offset, rng.permutation(n_windows))
        return self._plan[1], self._plan[2]
