#!/usr/bin/env bash
# Measure the default annotators against people on every built-in human-labelled set, growing
# each evaluation by one 25-pair chunk at a time, round robin over the sets, up to N pairs.
# Each step reuses every cached chunk (OUT/<set>/scores) and rewrites that set's report, so
# stopping at any point leaves three complete reports of equal size.
#   bench/eval_human_sets.sh [N=500] [SEED=0]
set -euo pipefail
N=${1:-500}
SEED=${2:-0}
OUT=${OUT:-output/eval}
for n in $(seq 25 25 "$N"); do
  for set in hh-rlhf-helpful hh-rlhf-harmless pandalm; do
    echo "== $set n=$n $(date -u +%H:%M:%S)"
    .venv/bin/prefsynth eval-annotators --pairs "$set" --n "$n" --seed "$SEED" --out "$OUT/$set-seed$SEED"
  done
done
