"""Can the self-play policy network represent perfect tic-tac-toe at all? Train it supervised on minimax.

The same policy the self-play command trains (decoder-tiny reshaped by the
selfplay config's `arch`, the digits board, the move as the next byte after the
prompt) learns, by plain supervised steps, to put its probability on the moves
a perfect player may choose (-log P(any optimal move)) over every one of the
4,520 positions with a move to make. Prints, every 250 steps, the share of
positions whose greedy move is optimal. If this reaches ~100%, a self-play run
that stays far below it is limited by its learning signal, not by the network.

    python bench/selfplay_capacity.py                     # the selfplay default: d_model 64, 2 layers
    python bench/selfplay_capacity.py --d-model 32 --layers 1 --steps 3000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    from stlm import registry
    from stlm.selfplay.games import get_game, reachable_states
    from stlm.selfplay.players import Minimax
    from stlm.selfplay.policy import Policy

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    game = get_game("tictactoe", board="digits")
    arch = {"d_model": args.d_model, "n_layers": args.layers, "n_heads": args.heads}
    family, cfg = registry.resolve_model("decoder-tiny", arch)
    model = registry.build_model(family.name, cfg)
    policy, minimax = Policy(game, family, family.resolve_tokenizer("auto", cfg)), Minimax(game)

    states = sorted(s for s in reachable_states(game) if game.winner(s) is None)  # a move to make
    ids, last = policy.encode(states)
    optimal = torch.zeros(len(states), len(game.actions), dtype=torch.bool)  # (N, A)
    for i, s in enumerate(states):
        optimal[i, minimax.optimal_moves(s)] = True
    params = sum(q.numel() for q in model.parameters())
    print(f"{len(states):,} positions; policy {arch}, {params:,} parameters; lr {args.lr}, batch {args.batch}")

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(states), (args.batch,))
        logits = policy.logits(model, ids[idx], last[idx])  # (B, A)
        best = torch.logsumexp(logits.masked_fill(~optimal[idx], float("-inf")), -1)
        loss = (torch.logsumexp(logits, -1) - best).mean()  # -log P(any optimal move)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == args.steps:
            with torch.no_grad():
                greedy = torch.cat(
                    [
                        policy.logits(model, ids[i : i + 1024], last[i : i + 1024]).argmax(-1)
                        for i in range(0, len(states), 1024)
                    ]
                )
            share = optimal[torch.arange(len(states)), greedy].float().mean().item()
            print(
                f"step {step:5d}  loss {loss.item():.4f}  greedy move optimal in {share:.2%} of positions", flush=True
            )


if __name__ == "__main__":
    main()
