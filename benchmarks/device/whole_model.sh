#!/usr/bin/env bash
# One device call for the whole-model numbers of benchmarks/RESULTS.md: the CUDA-only tests, the streamed
# embedding rate, a 1 Mbp generate and the decode rows of seqssm while mamba_ssm builds; then the training
# table and the prefill beside mamba_ssm. Each section has its own time cap so one slow part cannot eat the call.
#   bash benchmarks/device/whole_model.sh            (from the repo root on the device; writes under $OUT)
set -u
R=$PWD
export PRE="cd /tmp && timeout 170 python3 -c 'import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))' \
  $R/tests/test_rms_norm.py $R/tests/test_decoding.py $R/tests/test_mamba_inner.py -q -p no:cacheprovider -x 2>&1 | tail -n 15; \
  cd $R && timeout 60 bash benchmarks/device/stream_embed.sh 16000000 2>&1 | tail -n 4; \
  cd /tmp && timeout 150 python3 $R/benchmarks/bench_decode.py --sections generate --no-mamba --json \$OUT/generate.json 2>&1 | tail -n 3"
export POST_NOCONV="cd /tmp && timeout 230 python3 $R/benchmarks/bench_model.py --train --prefill --reps 6 --warmup 2 --json \$OUT/model.json 2>&1 | tail -n 25; \
  cd /tmp && timeout 150 python3 $R/benchmarks/bench_decode.py --sections decode --no-eager --ks 32 --new-tokens 256 --json \$OUT/decode.json 2>&1 | tail -n 14"
bash benchmarks/device/run_model_bench.sh
