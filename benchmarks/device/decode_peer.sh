#!/usr/bin/env bash
# One device call for issue 20's open targets, beside mamba_ssm built in the same call (run_model_bench.sh):
# while it builds, the GEMV decode path (bench_gemv.py: projections, then the 768 x 24 step with GEMV on and off)
# and the streamed embedding through the CLI; then decode beside mamba_ssm with the GEMV path on, and the
# 256 x 4 @ 262 k training shape without and (if it built in time) with causal-conv1d.
# Carry .whl, .carry/mamba_ssm.tar.gz, .carry/causal_conv1d.tar.gz (side-by-side.md). From the repo root:
#   bash benchmarks/device/decode_peer.sh         (about 8 minutes; writes under $OUT)
set -u
R=$PWD
export WITH_CC=1
export PRE="cd /tmp && timeout 120 python3 $R/benchmarks/bench_gemv.py --out \$OUT/gemv 2>&1 | tail -n 30; \
  cd $R && SEQSSM_INSTALLED=1 RUNS=2 timeout 110 bash benchmarks/device/stream_embed.sh 64000000 2>&1 | grep -E 'run [0-9]:|bases/s|Error'"
export POST_NOCONV="cd /tmp && SEQSSM_GEMV_MAX_ROWS=8 timeout 130 python3 $R/benchmarks/bench_decode.py --sections decode --no-eager --ks 32 --new-tokens 256 --json \$OUT/decode_gemv.json 2>&1 | tail -n 14; \
  cd /tmp && timeout 80 python3 $R/benchmarks/bench_model.py --train --shapes 2 --reps 6 --warmup 2 --json \$OUT/model_noconv.json 2>&1 | tail -n 8"
export POST="cd /tmp && timeout 80 python3 $R/benchmarks/bench_model.py --train --shapes 2 --reps 6 --warmup 2 --json \$OUT/model_cc.json 2>&1 | tail -n 8"
bash benchmarks/device/run_model_bench.sh
