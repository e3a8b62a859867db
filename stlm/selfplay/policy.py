"""The policy: a causal language model as a move chooser, reading the game's prompt and scoring its actions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from stlm.errors import UserError
from stlm.families import ModelFamily
from stlm.selfplay.games import Game
from stlm.tokenizers import Tokenizer


@dataclass
class Policy:
    """A causal LM as a move chooser: the logits of the game's action tokens after the prompt."""

    game: Game
    family: ModelFamily
    tokenizer: Tokenizer

    def __post_init__(self) -> None:
        ids = [self.tokenizer.encode(a) for a in self.game.actions]
        if any(len(i) != 1 for i in ids):
            raise UserError(f"the {self.game.name} actions must be one token each for this tokenizer")
        self.action_ids = torch.tensor([i[0] for i in ids])  # (A,)

    def encode(self, states: Sequence[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (N, T) right-padded, index of each row's last prompt id (N,))."""
        rows = [self.family.prompt_ids(self.tokenizer, self.game.prompt(s)) for s in states]
        ids = torch.full((len(rows), max(map(len, rows))), self.tokenizer.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return ids, torch.tensor([len(r) - 1 for r in rows])

    def logits(self, model: nn.Module, ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """(N, A) action logits in fp32: causal, so the padding after each prompt is never read."""
        logits = model(ids)  # (N, T, V)
        at_last = logits[torch.arange(ids.shape[0], device=ids.device), last]  # (N, V)
        return at_last[:, self.action_ids.to(ids.device)].float()

    @torch.inference_mode()
    def greedy(self, model: nn.Module, states: Sequence[tuple], device) -> list[int]:
        if not states:
            return []
        ids, last = self.encode(states)
        return self.logits(model, ids.to(device), last.to(device)).argmax(-1).tolist()
