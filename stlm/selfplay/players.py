"""Players the policy is measured against: uniformly random legal moves, and perfect play (minimax).

Minimax is negamax over the game's states, memoised (tic-tac-toe has 5,478
reachable states), preferring a quicker win and a slower loss: a position's
value for the mover is WIN - (plies to the end) for a forced win, 0 for a
draw, -(WIN - plies) for a forced loss. The perfect player picks among the
moves of best value; `optimal_moves` lists them all, so an evaluation can
follow every game a perfect opponent might choose.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from stlm.selfplay.games import Game

WIN = 100  # the value of a win now; more than any game's length


def _one_ply_later(value: int) -> int:
    return value - (value > 0) + (value < 0)


class Minimax:
    def __init__(self, game: Game) -> None:
        self.game = game
        self.value = lru_cache(maxsize=None)(self._value)

    def _value(self, state: tuple) -> int:
        """The state's value for the seat to move, under perfect play by both."""
        game = self.game
        won = game.winner(state)
        if won is not None:  # a draw, or the previous mover has just won: the mover now has lost
            return 0 if won == -1 else -WIN
        return max(self.move_values(state).values())

    def move_values(self, state: tuple) -> dict[int, int]:
        """Each legal move's value for the mover: the reply's value negated, one ply further from its end."""
        return {a: -_one_ply_later(self.value(self.game.play(state, a))) for a in self.game.legal(state)}

    def optimal_moves(self, state: tuple) -> list[int]:
        values = self.move_values(state)
        best = max(values.values())
        return [a for a, v in values.items() if v == best]

    def choose(self, state: tuple, rng: np.random.Generator) -> int:
        moves = self.optimal_moves(state)
        return moves[int(rng.integers(len(moves)))]


def random_move(game: Game, state: tuple, rng: np.random.Generator) -> int:
    legal = game.legal(state)
    return legal[int(rng.integers(len(legal)))]
