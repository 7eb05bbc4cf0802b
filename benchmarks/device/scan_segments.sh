#!/usr/bin/env bash
# One device call for the segment-parallel scan backward (ScanConfig.segments S, carry_parts Q; kernels/
# selective_scan/triton_bwd.py; issue 20): its CUDA tests, then, while mamba_ssm builds, seqssm's scan alone at
# B = 1, D = 512, L = 262,144 with S = 1, 2, 3, 4, 8 (and S = 2 with Q = 1, 16); then the same beside mamba_ssm
# (paired fwd+bwd) and the whole-model training row 256 x 4 @ 262 k with SEQSSM_SCAN_BWD_SEGMENTS=$MODEL_SEGMENTS
# (default 2; the S = 1 row is RESULTS.md's 1.016x). Carry .whl, .carry/mamba_ssm.tar.gz,
# .carry/causal_conv1d.tar.gz, .carry/triton (Triton cache parts) when there. From the repo root:
#   bash benchmarks/device/scan_segments.sh        (about 9 minutes; writes under $OUT)
set -u
R=$PWD
SCAN="python3 $R/benchmarks/bench_scan.py --quick --dim 512 --lengths 262144 --bwd-segments 2 3 4 8 2:1 2:16"
export PRE="cd /tmp && timeout -k 10 120 python3 -c 'import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))' \
  $R/tests/test_triton_scan.py -k 'segments or launch_shapes' -q -p no:cacheprovider 2>&1 | tail -n 15; \
  cd /tmp && timeout -k 10 170 $SCAN --out \$OUT/scan_alone 2>&1 | tail -n 16"
export POST_NOCONV="cd /tmp && timeout -k 10 130 $SCAN --paired-lengths 262144 --out \$OUT/scan_peer 2>&1 | tail -n 26; \
  cd /tmp && SEQSSM_SCAN_BWD_SEGMENTS=${MODEL_SEGMENTS:-2} timeout -k 10 90 python3 $R/benchmarks/bench_model.py --train --shapes 2 --reps 6 --warmup 2 --json \$OUT/model_segments.json 2>&1 | tail -n 6"
bash benchmarks/device/run_model_bench.sh
