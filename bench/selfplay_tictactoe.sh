#!/usr/bin/env bash
# Tic-tac-toe self-play: train in resumable pieces (each under 10 minutes on a shared CPU), then copy the
# learning curve into the docs. Run from the repository root; OUT defaults to runs/bench-selfplay.
#   bash bench/selfplay_tictactoe.sh [OUT]
# RECIPE: the recipe measured in docs/objectives/selfplay.md: rollout policy improvement on the digits board,
# games from 0-3 random opening moves, 16 games and 256 positions per update, targets refreshed every 50 updates,
# lr 2e-3 cosine over 5,000 updates (run T, ~27 min on one thread). REINFORCE's best (run S) is
#   RECIPE="--game tictactoe --board digits --baseline state --random-opening 3 --legal-loss 1 --entropy 0.3
#   --updates 1100 --games 256 --lr 1e-3 --schedule cosine --gamma 0.9 --snapshot-prob 0.5 --snapshot-every 50
#   --draw-reward 0.5 --eval-every 100"
set -euo pipefail
OUT=${1:-runs/bench-selfplay}
PY=${PY:-.venv/bin/python}
RECIPE=${RECIPE:---algorithm rollout --game tictactoe --board digits --random-opening 3 --games 16 --batch 256
  --refresh 50 --updates 5000 --lr 2e-3 --schedule cosine --eval-every 250}
if [ ! -f "$OUT/config.json" ]; then
  timeout 590 "$PY" -m stlm selfplay $RECIPE --threads 1 --device cpu --out "$OUT" --quiet || true   # a timeout leaves the checkpoint of the last evaluation
fi
while [ ! -f "$OUT/results.json" ]; do
  timeout 590 "$PY" -m stlm selfplay --resume "$OUT" --quiet || true
done
cat "$OUT/results.json"
cp "$OUT/curve.png" docs/img/selfplay-tictactoe.png
