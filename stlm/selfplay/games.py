"""Two-player games as text, for a language-model policy: the interface, tic-tac-toe, the table of games.

A game's state is an immutable, hashable value (minimax memoises on it); the
policy sees `prompt(state)`, a short text from the mover's side, and answers
one of the game's `actions` (one byte each for tic-tac-toe: "1".."9", the
cells row by row). Any action can be answered; one that `legal` does not list
is an illegal move, which ends the game and is penalised (loop.py).

    tic-tac-toe prompt   "X|XO.|.X.|..O>"    the mover's mark, the rows, ">"
                         (X moves first; cells: X, O, or "." for empty)
    --board digits       "X|XO3|4X6|78O>"    an empty cell shown as its own action byte: a legal
                         move is a byte the prompt holds (a copy), not a lookup

Adding a game: a class with the members of `Game`, built as cls(board=...), and a row in `GAMES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

from stlm.errors import UserError


class Game(Protocol):
    name: ClassVar[str]
    actions: ClassVar[tuple[str, ...]]  # every action's text; the policy chooses among these

    def initial(self) -> tuple: ...

    def to_move(self, state: tuple) -> int:
        """The seat to move: 0 (first) or 1."""
        ...

    def legal(self, state: tuple) -> list[int]:
        """Indexes into `actions` that may be played now (empty when the game is over)."""
        ...

    def play(self, state: tuple, action: int) -> tuple:
        """The state after a legal action."""
        ...

    def winner(self, state: tuple) -> int | None:
        """0 or 1 when that seat has won, -1 for a draw, None while the game goes on."""
        ...

    def prompt(self, state: tuple) -> str:
        """What the policy reads before choosing its action."""
        ...


# The 8 lines of three cells, cells numbered 0..8 row by row.
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
MARKS = ".XO"  # cell value 0, 1 (first seat), 2 (second seat)


class TicTacToe:
    """State: 9 cell values (0 empty, 1 X, 2 O). X (seat 0) moves first."""

    name = "tictactoe"
    actions = tuple(str(i) for i in range(1, 10))

    def initial(self) -> tuple:
        return (0,) * 9

    def to_move(self, state: tuple) -> int:
        return 0 if state.count(1) == state.count(2) else 1

    def legal(self, state: tuple) -> list[int]:
        return [] if self.winner(state) is not None else [i for i, v in enumerate(state) if v == 0]

    def play(self, state: tuple, action: int) -> tuple:
        if state[action] != 0:
            raise ValueError(f"cell {action + 1} is taken")
        cells = list(state)
        cells[action] = 1 + self.to_move(state)
        return tuple(cells)

    def winner(self, state: tuple) -> int | None:
        for a, b, c in LINES:
            if state[a] != 0 and state[a] == state[b] == state[c]:
                return state[a] - 1
        return -1 if 0 not in state else None

    def __init__(self, board: str = "dots") -> None:
        self.board = board

    def prompt(self, state: tuple) -> str:
        digits = self.board == "digits"
        cells = [MARKS[v] if v or not digits else self.actions[i] for i, v in enumerate(state)]
        rows = ["".join(cells[r : r + 3]) for r in (0, 3, 6)]
        return f"{MARKS[1 + self.to_move(state)]}|{'|'.join(rows)}>"


GAMES: dict[str, type] = {"tictactoe": TicTacToe}
BOARDS = ("dots", "digits")  # how a prompt shows an empty cell: "." or its own action byte


def get_game(name: str, board: str = "dots") -> Game:
    """The game called `name`, its prompt showing empty cells as `board` says; a UserError naming the known
    ones otherwise."""
    if name not in GAMES:
        raise UserError(f"unknown game {name!r}; known: {', '.join(GAMES)}")
    if board not in BOARDS:
        raise UserError(f"unknown board {board!r}; known: {', '.join(BOARDS)}")
    return GAMES[name](board=board)


def outcome(game: Game, state: tuple, seat: int) -> float:
    """A finished game's result for `seat`: 1 win, 0 draw, -1 loss."""
    won = game.winner(state)
    return 0.0 if won == -1 else (1.0 if won == seat else -1.0)


def reachable_states(game: Game) -> Sequence[tuple]:
    """Every state reachable from the start by legal play (the start included), each once."""
    seen, frontier = {game.initial()}, [game.initial()]
    while frontier:
        state = frontier.pop()
        for action in game.legal(state):
            nxt = game.play(state, action)
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return list(seen)
