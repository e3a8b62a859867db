"""Every position of a trained tic-tac-toe policy: how often its greedy move is one of minimax's.

    python bench/selfplay_scan.py RUN

Scans all 4,520 unfinished reachable positions (not only those a game against random or
minimax reaches): "optimal" counts moves minimax also plays (its preference for a quicker
win and a slower loss included); "value-keeping" counts moves that keep the position's
game-theoretic result (a won position stays won, a drawn one drawn).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a self-play run folder (stlm selfplay --out)")
    args = p.parse_args()

    from stlm import checkpoint as ckpt_io
    from stlm.selfplay.games import get_game, reachable_states
    from stlm.selfplay.players import Minimax
    from stlm.selfplay.policy import Policy

    torch.set_num_threads(1)
    run = ckpt_io.load(ckpt_io.latest_checkpoint(args.run))
    board = ckpt_io.load_config(ckpt_io.latest_checkpoint(args.run))["selfplay"]["board"]
    game = get_game("tictactoe", board=board)
    minimax = Minimax(game)
    policy = Policy(game, run.family, run.tokenizer)
    states = [s for s in reachable_states(game) if game.winner(s) is None]
    moves = policy.greedy(run.model.eval(), states, "cpu")

    def sign(v: int) -> int:
        return (v > 0) - (v < 0)

    optimal = sum(m in minimax.optimal_moves(s) for s, m in zip(states, moves))
    keeping = sum(
        m in game.legal(s) and sign(minimax.move_values(s)[m]) == sign(minimax.value(s)) for s, m in zip(states, moves)
    )
    n = len(states)
    print(f"{args.run}: greedy moves over all {n:,} unfinished positions")
    print(f"  optimal (one of minimax's moves): {optimal:,} ({optimal / n:.2%})")
    print(f"  value-keeping (the result stays won / drawn): {keeping:,} ({keeping / n:.2%})")


if __name__ == "__main__":
    main()
