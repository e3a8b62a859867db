#!/bin/bash
# Multi-token prediction and distillation, measured on pydocs on this CPU (docs/objectives/mtp.md,
# docs/objectives/distillation.md): 3 epochs per run, equal steps and equal wall-clock against plain
# next-token training of the same model. Resumable: a run whose report exists is skipped; rerun to continue.
#
# Two chains run side by side, one thread each (a 2-core machine): [plain, mtp:4, mtp:4 for plain's time]
# and [teacher, distilled student]; then [plain for the student's time] beside [mtp:2, held-out scores,
# speculative decoding]. Every wall-clock compared was taken beside one other 1-thread run of this script.
# The whole script holds the shared heavy-job lock (flock $STLM_LOCK) so nothing else shares the cores.
#
#   bash bench/mtpkd_measure.sh [RUNS_DIR]      (default runs/mtpkd; STLM_LOCK=/work/heavy.lock)
#   python bench/mtpkd_report.py RUNS_DIR       (the tables and the curve plot)
set -euo pipefail
R=${1:-runs/mtpkd}
LOCK=${STLM_LOCK:-/work/heavy.lock}
PY=${PYTHON:-python}
STLM="$PY -m stlm"
# 3 epochs of pydocs (2,353,944 training bytes) at 8 x 256 bytes per step
STEPS=${STEPS:-3450}
COMMON="--data pydocs --seq-len 256 --batch-size 8 --eval-every 575 --save-every 575 --threads 1 --quiet"
TEACHER_ARCH="--set model.d_model=192 --set model.n_layers=4 --set model.n_heads=6"
MTP="--mtp-weights 1,0.5,0.5,0.5 --mtp-curriculum 0.2"
KD="--kd-alpha 0.5 --kd-temperature 2 --kd-cache-dtype fp16"
EVAL="--threads 1 --quiet --max-ids 65536"
mkdir -p "$R"
done_run() { [ -f "$1/report.md" ]; }
# steps of run $2 that take the wall-clock of $STEPS steps of run $1 (each from its metrics.jsonl)
eq_steps() {
  $PY - "$R/$1" "$R/$2" "$STEPS" <<'PY'
import json, sys
def elapsed(run):
    rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
    return max(r["elapsed_s"] for r in rows if "elapsed_s" in r)
print(max(1, round(int(sys.argv[3]) * elapsed(sys.argv[1]) / elapsed(sys.argv[2]))))
PY
}
train() { local out=$1; shift; done_run "$R/$out" || $STLM train "$@" $COMMON --out "$R/$out"; }
scores() {
  for run in "$@"; do
    [ -f "$R/evals-$run/val.json" ] || $STLM evaluate "$R/$run" --task bpb $EVAL --json "$R/evals-$run/val.json"
    [ -f "$R/evals-$run/wikitext2.json" ] || $STLM evaluate "$R/$run" --task wikitext2 $EVAL \
        --json "$R/evals-$run/wikitext2.json"
  done
}
chain_a() {
  train plain --model decoder-tiny --steps $STEPS
  train mtp4 --model decoder-tiny --objective mtp:4 $MTP --steps $STEPS
  train mtp4-eqtime --model decoder-tiny --objective mtp:4 $MTP --steps "$(eq_steps plain mtp4)"
}
chain_b() {
  # the teacher: 4 layers of width 192 (about 2x decoder-tiny), trained the same way
  train teacher --model decoder-tiny $TEACHER_ARCH --steps $STEPS
  # the student: teacher outputs computed in epoch 1 and read back from the cache after (fp16, every id)
  train kd --model decoder-tiny --teacher "$R/teacher" $KD --kd-cache "$R/kd-cache" --steps $STEPS
}
chain_c() { train plain-kdtime --model decoder-tiny --steps "$(eq_steps kd plain)"; }
chain_d() {
  train mtp2 --model decoder-tiny --objective mtp:2 --mtp-weights 1,0.5 --mtp-curriculum 0.2 --steps $STEPS
  [ -f "$R/speculative.json" ] || $PY bench/speculative.py "$R/mtp4" --max-new 96 --repeats 3 --threads 1 \
      --json "$R/speculative.json"
  [ -f "$R/speculative-mtp2.json" ] || $PY bench/speculative.py "$R/mtp2" --max-new 96 --repeats 3 --threads 1 \
      --json "$R/speculative-mtp2.json"
  scores plain mtp4 mtp4-eqtime mtp2 teacher kd
}
both() { "$1" & local a=$!; "$2" & local b=$!; wait $a; wait $b; }
export -f chain_a chain_b chain_c chain_d both train scores done_run eq_steps
export R PY STLM STEPS COMMON TEACHER_ARCH MTP KD EVAL
flock "$LOCK" bash -c 'set -e; both chain_a chain_b && both chain_c chain_d && scores plain-kdtime'
$PY bench/mtpkd_report.py "$R" --png "$R/curves.png"
