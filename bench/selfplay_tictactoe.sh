#!/usr/bin/env bash
# Tic-tac-toe self-play: train in resumable pieces (each under 10 minutes on a shared CPU), then copy the
# learning curve into the docs. Run from the repository root; OUT defaults to runs/bench-selfplay.
#   bash bench/selfplay_tictactoe.sh [OUT]
# RECIPE: the best recipe measured in docs/objectives/selfplay.md (run S: the digits encoding, a per-position
# baseline, games from 0-3 random opening moves, the legal-move term, entropy 0.3, lr 1e-3 cosine over 1,100
# updates of 256 games, gamma 0.9, draw reward 0.5, half the games against past snapshots); override it to try another.
set -euo pipefail
OUT=${1:-runs/bench-selfplay}
PY=${PY:-.venv/bin/python}
RECIPE=${RECIPE:---game tictactoe --board digits --baseline state --random-opening 3 --legal-loss 1 --entropy 0.3
  --updates 1100 --games 256 --lr 1e-3 --schedule cosine --gamma 0.9 --snapshot-prob 0.5 --snapshot-every 50
  --draw-reward 0.5 --eval-every 100}
if [ ! -f "$OUT/config.json" ]; then
  timeout 590 "$PY" -m stlm selfplay $RECIPE --threads 1 --device cpu --out "$OUT" --quiet || true   # a timeout leaves the checkpoint of the last evaluation
fi
while [ ! -f "$OUT/results.json" ]; do
  timeout 590 "$PY" -m stlm selfplay --resume "$OUT" --quiet || true
done
cat "$OUT/results.json"
cp "$OUT/curve.png" docs/img/selfplay-tictactoe.png
