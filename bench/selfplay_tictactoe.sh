#!/usr/bin/env bash
# Tic-tac-toe self-play: train in resumable pieces (each under 10 minutes on a shared CPU), then copy the
# learning curve into the docs. Run from the repository root; OUT defaults to runs/bench-selfplay.
#   bash bench/selfplay_tictactoe.sh [OUT]
# RECIPE: the best recipe measured in docs/objectives/selfplay.md (run E: the digits encoding, lr 3e-3 cosine,
# gamma 0.6, draw reward 0.5, entropy 0.05, 70% of the games against past snapshots); override it to try another.
set -euo pipefail
OUT=${1:-runs/bench-selfplay}
PY=${PY:-.venv/bin/python}
RECIPE=${RECIPE:---game tictactoe --board digits --updates 600 --games 256 --lr 3e-3 --schedule cosine --gamma 0.6 --entropy 0.05
  --snapshot-prob 0.7 --snapshot-every 25 --draw-reward 0.5 --eval-every 50}
if [ ! -f "$OUT/config.json" ]; then
  timeout 590 "$PY" -m stlm selfplay $RECIPE --threads 1 --device cpu --out "$OUT" --quiet || true   # a timeout leaves a checkpoint every 50 updates
fi
while [ ! -f "$OUT/results.json" ]; do
  timeout 590 "$PY" -m stlm selfplay --resume "$OUT" --quiet || true
done
cat "$OUT/results.json"
cp "$OUT/curve.png" docs/img/selfplay-tictactoe.png
