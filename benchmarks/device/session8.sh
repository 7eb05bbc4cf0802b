#!/usr/bin/env bash
# Session 8, call 1: CUDA tests of the merged architectures (attention, MoE, SSD, S4D), scan, decoding and
# scoring; then where the streamed per-position embedding spends its time (cProfile, 4 M bases); seqssm only.
set -u
R=$PWD
export NO_PEER=1
export PRE="cd /tmp && timeout 300 python3 -c 'import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))' \
  $R/tests/test_architectures.py $R/tests/test_moe.py $R/tests/test_ssd.py $R/tests/test_s4d.py $R/tests/test_triton_scan.py \
  $R/tests/test_decoding.py $R/tests/test_score.py $R/tests/test_causal_conv1d.py \
  -q -p no:cacheprovider -rfEs > \$OUT/cuda_tests.log 2>&1; tail -n 30 \$OUT/cuda_tests.log; \
  cd $R && PROFILE=1 timeout 200 bash benchmarks/device/stream_embed.sh 4000000 2>&1 | tail -n 60"
bash benchmarks/device/run_model_bench.sh
