#!/usr/bin/env bash
# One device call (issues 14 and 16): the first optimiser steps of the FSDD fine-tune on the GPU with the collate's
# rounding of batch lengths (SEQSSM_PAD_TOKENS=16, the default) and as before the fix ("old": SEQSSM_PAD_TOKENS=1,
# unrounded batches, and --specialize-norm-rows, RMSNorm specialising its row counts again), each in a fresh
# process with its own empty Triton cache (a cold machine); per step the seconds, the padded length and the Triton
# compiles (count, seconds), then one summary line a run. benchmarks/fsdd_step.py says what it runs.
# Needs the carried wheels (.whl) and the FSDD clips in .carry/archbench/fsdd (made here by
# `python benchmarks/architectures.py --prepare-data .carry/archbench`). From the repo root on the device, ~150 s:
#   bash benchmarks/device/fsdd_step.sh
#   FSDD_ARGS="--patch 0 --clip 2" bash benchmarks/device/fsdd_step.sh   (classification.py's recipe: log-mel, 10 ms)
# FSDD_MAX_S (default 75) stops a run after the step that passes that many seconds, so the slow (old) run
# fits the call; FSDD_TIMEOUT (default 90) kills a run. Writes $OUT/fsdd/{rounded,old}.{log,json}.
set -u
. benchmarks/device/install.sh; mkdir -p "$OUT/fsdd"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for run in "16 rounded" "1 old --specialize-norm-rows"; do
  set -- $run
  rm -rf "/tmp/triton_cache_$2"
  (cd /tmp && SEQSSM_PAD_TOKENS=$1 TRITON_CACHE_DIR="/tmp/triton_cache_$2" timeout -k 10 "${FSDD_TIMEOUT:-90}" \
     python3 "$R/benchmarks/fsdd_step.py" --fsdd "$R/.carry/archbench/fsdd" --label "$2" --steps 30 \
     --max-seconds "${FSDD_MAX_S:-75}" --json "$OUT/fsdd/$2.json" ${3:-} ${FSDD_ARGS:-}) > "$OUT/fsdd/$2.log" 2>&1
  grep -v '^summary' "$OUT/fsdd/$2.log" | tail -n 40
done
grep -h "^summary" "$OUT/fsdd/rounded.log" "$OUT/fsdd/old.log"
