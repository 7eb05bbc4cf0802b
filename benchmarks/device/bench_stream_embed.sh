#!/usr/bin/env bash
# One device call for benchmarks/bench_stream_embed.py (issue 20): streamed per-position embedding of a random
# 4 Mbp contig, d_model 128 x 4 layers, chunk 2^16; cold and warm runs, per-stage times. Needs the carried
# wheels (.whl, as for architectures.sh). From the repo root on the device:
#   bash benchmarks/device/bench_stream_embed.sh [extra bench args]      (writes $OUT/stream_embed/results.*)
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/stream_embed"
R=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/sq . > "$OUT/install.log" 2>&1 \
  || { tail -n 20 "$OUT/install.log"; exit 1; }
export PYTHONPATH=/tmp/sq:/tmp/site PYTHONUNBUFFERED=1 SEQSSM_PROGRESS=0
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
cd /tmp && timeout "${BENCH_TIMEOUT:-500}" python3 "$R/benchmarks/bench_stream_embed.py" --device cuda \
  --out "$OUT/stream_embed" "$@" 2>&1 | tee "$OUT/stream_embed/log.txt"
