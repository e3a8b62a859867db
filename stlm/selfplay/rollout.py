"""Rollout policy improvement: each position's target is the move that does best when the policy itself plays
both seats on from every legal move, greedily; the policy learns it by cross-entropy.

    positions   the current policy plays `games` games against itself (greedy among the legal moves, a
                uniformly random legal move with probability `explore`); every position it moved in joins a
                buffer of the positions seen so far (each once)
    target(p)   computed when p is first seen and again for every position each `refresh` updates (so a
                step trains on targets of a recent policy, and the playouts cost little per step):
                for every legal move a at p: z(a) = the result, for p's mover, of the greedy self-play
                game from play(p, a) (1 win, draw_reward draw, -1 loss), times gamma per later move of
                that mover (a quicker win is worth more, a later loss costs less);
                target(p) = uniform over the moves of largest z, 0 on every other action (illegal ones too)
    loss        cross-entropy(target(p), pi(. | p)) over `batch` buffer positions drawn per update

Why it reaches perfect play (backward induction): where at most one move is left, z is exact, so the targets
are optimal there; once the greedy policy plays optimally from every position with at most k moves left, the
games z is read from are perfect play, so z(a) is a's minimax value and the targets are optimal with k + 1
moves left (each refresh settles at least one more move of depth, once the training has fitted the targets).
The policy is its own search: no value head, no value table, no minimax.

This is one-ply expert iteration with rollouts (Anthony et al. 2017; Tesauro and Galperin's rollouts):
REINFORCE (loop.py) learns only from the sampled result of each whole game, this from a search over the
moves of every position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stlm.selfplay.games import Game, outcome
from stlm.selfplay.policy import Policy


class Legal:
    """Each position's legal-move mask (A,) bool, memoised (positions repeat across games and updates)."""

    def __init__(self, game: Game) -> None:
        self.game = game
        self.mask = lru_cache(maxsize=None)(self._mask)

    def _mask(self, state: tuple) -> torch.Tensor:
        mask = torch.zeros(len(self.game.actions), dtype=torch.bool)
        mask[self.game.legal(state)] = True
        return mask

    def stack(self, states: Sequence[tuple]) -> torch.Tensor:
        return torch.stack([self.mask(s) for s in states])  # (N, A)


@torch.no_grad()
def greedy_legal(policy: Policy, model: nn.Module, legal: Legal, states: Sequence[tuple], device) -> list[int]:
    """The policy's most likely legal move in each (unfinished) position."""
    ids, last = policy.encode(states)
    logits = policy.logits(model, ids.to(device), last.to(device)).cpu()  # (N, A)
    return logits.masked_fill(~legal.stack(states), float("-inf")).argmax(-1).tolist()


def play_positions(
    game: Game,
    policy: Policy,
    model: nn.Module,
    legal: Legal,
    starts: Sequence[tuple],
    *,
    explore: float,
    rng: np.random.Generator,
    device,
) -> list[tuple]:
    """Play the games from `starts`, the policy in both seats (greedy; a random legal move with probability
    `explore`); the positions it moved in, in order of play."""
    states, visited = list(starts), []
    live = [g for g, s in enumerate(states) if game.winner(s) is None]
    while live:
        moves = greedy_legal(policy, model, legal, [states[g] for g in live], device)
        still = []
        for g, action in zip(live, moves):
            visited.append(states[g])
            if rng.random() < explore:
                options = game.legal(states[g])
                action = options[int(rng.integers(len(options)))]
            states[g] = game.play(states[g], action)
            if game.winner(states[g]) is None:
                still.append(g)
        live = still
    return visited


def playout_values(
    game: Game,
    policy: Policy,
    model: nn.Module,
    legal: Legal,
    starts: Sequence[tuple],
    movers: Sequence[int],
    *,
    gamma: float,
    draw_reward: float,
    device,
) -> list[float]:
    """Each start played to its end by the greedy policy in both seats: the result for movers[i] (the seat
    that moved into the start), times gamma per move of that seat after the start."""
    values = [0.0] * len(starts)
    states, plies = list(starts), [0] * len(starts)

    def settle(i: int) -> bool:
        if game.winner(states[i]) is None:
            return False
        result = outcome(game, states[i], movers[i])
        values[i] = (draw_reward if result == 0 else result) * gamma ** (plies[i] // 2)
        return True

    live = [i for i in range(len(starts)) if not settle(i)]
    while live:
        moves = greedy_legal(policy, model, legal, [states[i] for i in live], device)
        for i, action in zip(live, moves):
            states[i] = game.play(states[i], action)
            plies[i] += 1
        live = [i for i in live if not settle(i)]
    return values


def best_moves(
    game: Game,
    policy: Policy,
    model: nn.Module,
    legal: Legal,
    positions: Sequence[tuple],
    *,
    gamma: float,
    draw_reward: float = 0.0,
    device,
    chunk: int = 1024,
) -> torch.Tensor:
    """(N, A) bool: each position's moves of best playout value (ties all kept); `chunk` positions at a time."""
    if len(positions) > chunk:
        parts = [positions[i : i + chunk] for i in range(0, len(positions), chunk)]
        kw = dict(gamma=gamma, draw_reward=draw_reward, device=device, chunk=chunk)
        return torch.cat([best_moves(game, policy, model, legal, part, **kw) for part in parts])
    pairs = [(i, a) for i, p in enumerate(positions) for a in game.legal(p)]
    values = playout_values(
        game,
        policy,
        model,
        legal,
        [game.play(positions[i], a) for i, a in pairs],
        [game.to_move(positions[i]) for i, _ in pairs],
        gamma=gamma,
        draw_reward=draw_reward,
        device=device,
    )
    z = torch.full((len(positions), len(game.actions)), float("-inf"), dtype=torch.float64)  # (N, A)
    for (i, a), v in zip(pairs, values):
        z[i, a] = v
    return z >= z.max(-1, keepdim=True).values - 1e-9  # (N, A) the tied best moves


def as_targets(best: torch.Tensor) -> torch.Tensor:
    """(N, A) distributions, uniform over each row's best moves."""
    return best.float() / best.sum(-1, keepdim=True)


def to_bits(best: torch.Tensor) -> list[int]:
    """Each row of a (N, A) bool mask as one integer (bit a: move a), as a checkpoint keeps them."""
    return (best.long() << torch.arange(best.shape[1])).sum(-1).tolist()


def from_bits(bits: Sequence[int], actions: int) -> torch.Tensor:
    return (torch.tensor(bits, dtype=torch.long)[:, None] >> torch.arange(actions)) & 1 == 1  # (N, A)


@dataclass
class RolloutObjective:
    """Cross-entropy to the rollout targets as an `Objective`: tensors = ids (N, T), last (N,), targets (N, A)."""

    policy: Policy

    def loss(self, model: nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        ids, last, targets = tensors
        log_pi = F.log_softmax(self.policy.logits(model, ids, last), -1)  # (N, A) over every action
        return -(targets * log_pi).sum(-1).mean()

    def counts(self, tensors: tuple[torch.Tensor, ...]) -> tuple[int, int]:
        return int(tensors[0].numel()), 0
