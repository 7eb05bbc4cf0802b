#!/usr/bin/env bash
# One device call for benchmarks/bench_gemv.py (issue 20): the decode projections (F.linear, torch.mv, the Triton
# GEMV kernels) at B = 1, 4, 64, the fused decode pieces, the 768 x 24 decode step with the GEMV path on, fused
# (SEQSSM_FUSE_DECODE) and off, then the launch-shape sweep; then profile_decode.py's per-kernel breakdown of the
# batch-1 step (GEMV path on, then fused). Needs the carried wheels (.whl, as for architectures.sh). From the repo
# root on the device (about 8 minutes at most; the sweep, last, is what a timeout cuts):
#   bash benchmarks/device/bench_gemv.sh [extra bench args]
#   (writes $OUT/gemv/{gemv.tsv,table.md,log.txt,profile.txt,profile_fused.txt})
set -u
. benchmarks/device/install.sh; mkdir -p "$OUT/gemv"
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
# Every row rewrites gemv.tsv and table.md, so a run stopped by the timeout keeps what it measured.
cd /tmp && timeout 340 python3 "$R/benchmarks/bench_gemv.py" --out "$OUT/gemv" --sweep "$@" 2>&1 \
  | tee "$OUT/gemv/log.txt"
echo "bench_gemv exit ${PIPESTATUS[0]}" | tee -a "$OUT/gemv/log.txt"
timeout 60 python3 "$R/benchmarks/profile_decode.py" --batch 1 --k 1 2>&1 | tee "$OUT/gemv/profile.txt" | head -30
SEQSSM_FUSE_DECODE=1 timeout 60 python3 "$R/benchmarks/profile_decode.py" --batch 1 --k 1 2>&1 \
  | tee "$OUT/gemv/profile_fused.txt" | head -30
save_triton_cache
