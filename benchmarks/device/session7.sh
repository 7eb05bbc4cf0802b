#!/usr/bin/env bash
# Session 7, call 1: CUDA tests of the merged kernels (scan by role, SSD with 64-bit offsets, decoding, conv,
# fused block), the decode-step profile, first-call compile times, and the streamed embedding rate; seqssm only.
set -u
R=$PWD
export NO_PEER=1
export PRE="cd /tmp && timeout 240 python3 -c 'import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))' \
  $R/tests/test_ssd.py $R/tests/test_triton_scan.py $R/tests/test_decoding.py $R/tests/test_causal_conv1d.py $R/tests/test_triton_conv1d.py \
  -q -p no:cacheprovider -rfE 2>&1 | tail -n 25; \
  cd /tmp && timeout 60 python3 $R/benchmarks/profile_decode.py 2>&1 | tail -n 40; \
  cd /tmp && timeout 40 python3 $R/benchmarks/profile_decode.py --batch 64 2>&1 | head -n 3; \
  cd /tmp && timeout 120 python3 $R/benchmarks/compile_times.py 2>&1 | tail -n 30; \
  cd $R && timeout 100 bash benchmarks/device/stream_embed.sh 4000000 2>&1 | tail -n 5"
bash benchmarks/device/run_model_bench.sh
