#!/usr/bin/env bash
# One device call for benchmarks/bench_stream_embed.py (issue 20): streamed per-position embedding of a random
# 4 Mbp contig, d_model 128 x 4 layers, chunk 2^18 (the pipeline default on a GPU); cold and warm runs, per-stage times. Needs the carried
# wheels (.whl, as for architectures.sh). From the repo root on the device:
#   bash benchmarks/device/bench_stream_embed.sh [extra bench args]      (writes $OUT/stream_embed/results.*)
set -u
. benchmarks/device/install.sh; mkdir -p "$OUT/stream_embed"
export SEQSSM_PROGRESS=0
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
cd /tmp && timeout -k 10 "${BENCH_TIMEOUT:-500}" python3 "$R/benchmarks/bench_stream_embed.py" --device cuda \
  --out "$OUT/stream_embed" "$@" 2>&1 | tee "$OUT/stream_embed/log.txt"
