#!/bin/bash
# Multi-token prediction and distillation, measured on pydocs on this CPU (docs/objectives/mtp.md,
# docs/objectives/distillation.md). Resumable: a piece whose output exists is skipped; rerun to continue.
# Each piece runs under the shared heavy-job lock (flock $LOCK), so timings are not shared with other jobs.
#
#   bash bench/mtpkd_measure.sh [RUNS_DIR]      (default runs/mtpkd; STLM_LOCK=/work/heavy.lock)
set -euo pipefail
R=${1:-runs/mtpkd}
LOCK=${STLM_LOCK:-/work/heavy.lock}
PY=${PYTHON:-python}
STLM="$PY -m stlm"
STEPS=${STEPS:-120}
COMMON="--data pydocs --seq-len 256 --batch-size 8 --eval-every 0 --save-every 100 --threads 2 --quiet"
TEACHER_ARCH="--set model.d_model=192 --set model.n_layers=4 --set model.n_heads=6"
mkdir -p "$R"
done_run() { [ -f "$1/report.md" ]; }

MTP="--objective mtp:4 --mtp-weights 1,0.5,0.5,0.5 --mtp-curriculum 0.2"
EVAL="--threads 2 --quiet --max-ids 65536"
eq_steps() {  # mtp:4 steps that take plain's wall-clock
  $PY - "$R" "$STEPS" <<'PY'
import json, sys
def elapsed(run):
    rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
    return max(r["elapsed_s"] for r in rows if "elapsed_s" in r)
r, steps = sys.argv[1], int(sys.argv[2])
print(max(1, round(steps * elapsed(f"{r}/plain") / elapsed(f"{r}/mtp4"))))
PY
}
# 1. plain next-token and mtp:4: the same model, data order and steps; then mtp:4 for plain's wall-clock.
piece1() {
  done_run "$R/plain" || $STLM train --model decoder-tiny --steps $STEPS $COMMON --out "$R/plain"
  done_run "$R/mtp4" || $STLM train --model decoder-tiny $MTP --steps $STEPS $COMMON --out "$R/mtp4"
  done_run "$R/mtp4-eqtime" || $STLM train --model decoder-tiny $MTP --steps "$(eq_steps)" $COMMON --out "$R/mtp4-eqtime"
}
# 2. the teacher: 4 layers of width 192 (about 2.4x decoder-tiny), a third more steps.
piece2() {
  done_run "$R/teacher" || $STLM train --model decoder-tiny $TEACHER_ARCH --steps $((STEPS * 4 / 3)) $COMMON --out "$R/teacher"
}
all_pieces() { piece1 && piece2 && piece3; }
# 3. the distilled student (same model, data, steps as plain); held-out scores (the pydocs validation
#    split and WikiText-2 valid, first 65536 ids each); speculative decoding on the mtp:4 model.
piece3() {
  done_run "$R/kd" || $STLM train --model decoder-tiny --teacher "$R/teacher" --kd-alpha 0.5 --kd-temperature 2 \
      --steps $STEPS $COMMON --out "$R/kd"
  for run in plain mtp4 mtp4-eqtime teacher kd; do
    [ -f "$R/evals-$run/val.json" ] || $STLM evaluate "$R/$run" --task bpb $EVAL --json "$R/evals-$run/val.json"
    [ -f "$R/evals-$run/wikitext2.json" ] || $STLM evaluate "$R/$run" --task wikitext2 $EVAL \
        --json "$R/evals-$run/wikitext2.json"
  done
  [ -f "$R/speculative.json" ] || $PY bench/speculative.py "$R/mtp4" --max-new 96 --repeats 3 --json "$R/speculative.json"
}
export -f piece1 piece2 piece3 all_pieces done_run eq_steps
export R PY STLM STEPS COMMON TEACHER_ARCH MTP EVAL
# One hold of the lock (~10 minutes on 2 cores); a rerun skips what is done.
flock "$LOCK" bash -c all_pieces
$PY bench/mtpkd_report.py "$R"
