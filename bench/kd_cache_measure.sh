#!/usr/bin/env bash
# Distillation with and without the teacher cache (--kd-cache): time per step and cache size on a small
# pydocs run that repeats its data (docs/objectives/distillation.md). Every run: the same student, teacher,
# windows and steps; each under the shared heavy-job lock. A run whose report.md exists is skipped.
#
#   TEACHER=runs/mtpkd/teacher bash bench/kd_cache_measure.sh [RUNS_DIR]    (default runs/kd-cache)
set -euo pipefail
R=${1:-runs/kd-cache}
TEACHER=${TEACHER:-runs/mtpkd/teacher}   # bench/mtpkd_measure.sh's teacher: decoder d=192 x 4, 1.8M parameters
LOCK=${STLM_LOCK:-/work/heavy.lock}
PY=${PYTHON:-python}
STEPS=${STEPS:-100}
# 20 pydocs documents: about 25 steps of 8 x 256 bytes per epoch, so 100 steps are 4 epochs.
COMMON="--model decoder-tiny --data pydocs --max-documents 20 --seq-len 256 --batch-size 8 --steps $STEPS
  --eval-every 0 --save-every 0 --log-every 1 --threads 2 --teacher $TEACHER --kd-alpha 0.5 --kd-temperature 2"
mkdir -p "$R"
run() {  # NAME [flags...]
  local name=$1; shift
  [ -f "$R/$name/report.md" ] || flock "$LOCK" $PY -m stlm train $COMMON "$@" --out "$R/$name" 2> "$R/$name.log"
}
run live
run cache-fp16 --kd-cache "$R/cache" --kd-cache-dtype fp16
run cache-top16 --kd-cache "$R/cache" --kd-cache-dtype fp16 --kd-topk 16
run cache-fp32 --kd-cache "$R/cache" --kd-cache-dtype fp32
$PY - "$R" <<'PY'
import json, pathlib, re, sys
r = pathlib.Path(sys.argv[1])
rows = []
for name in ("live", "cache-fp16", "cache-top16", "cache-fp32"):
    m = [json.loads(l) for l in (r / name / "metrics.jsonl").read_text().splitlines()]
    t = {x["step"]: x["elapsed_s"] for x in m if "elapsed_s" in x and "loss" in x}
    loss = {x["step"]: x["loss"] for x in m if "loss" in x}
    val = [x["val_bpb"] for x in m if "val_bpb" in x]
    log = (r / f"{name}.log").read_text()
    cache = re.search(r"kd cache \S+: (\d+) rows, ([\d.]+) MiB .*?(\d+) rows read, (\d+) computed", log)
    n = max(t)
    first = int(cache.group(4)) // 8 if cache else 25  # steps of the first epoch: rows computed / batch
    s1 = t[first] / first
    later = (t[n] - t[first]) / (n - first)
    rows.append((name, n, t[n], s1, later, loss[n], val[-1] if val else None,
                 f"{cache.group(2)} MiB, {cache.group(1)} rows" if cache else "-"))
print("| run | steps | train s | s/step epoch 1 | s/step later epochs | last loss | val BPB | cache |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for name, n, total, s1, later, loss, val, cache in rows:
    v = f"{val:.4f}" if val is not None else "-"
    print(f"| {name} | {n} | {total:.1f} | {s1:.3f} | {later:.3f} | {loss:.4f} | {v} | {cache} |")
PY
