#!/usr/bin/env bash
# Tic-tac-toe self-play: train in resumable pieces (each under 10 minutes on a shared CPU), then copy the
# learning curve into the docs. Run from the repository root; OUT defaults to runs/bench-selfplay.
#   bash bench/selfplay_tictactoe.sh [OUT]
set -euo pipefail
OUT=${1:-runs/bench-selfplay}
PY=${PY:-.venv/bin/python}
if [ ! -f "$OUT/config.json" ]; then
  timeout 590 "$PY" -m stlm selfplay --game tictactoe --updates 1000 --lr 3e-3 --eval-every 50 --snapshot-every 50 --no-scale-advantages \
    --threads 1 --device cpu --out "$OUT" --quiet || true   # a timeout leaves a checkpoint every 50 updates
fi
while [ ! -f "$OUT/results.json" ]; do
  timeout 590 "$PY" -m stlm selfplay --resume "$OUT" --quiet || true
done
cat "$OUT/results.json"
cp "$OUT/curve.png" docs/img/selfplay-tictactoe.png
