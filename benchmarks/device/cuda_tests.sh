#!/usr/bin/env bash
# One device call: the test files that exercise the Triton kernels and the GPU paths of every architecture,
# compiled at CUDA sizes (including the past-2^31-element cases that skip on the CPU). Each file runs alone
# under its own limit, so one slow file cannot hide the others; results go to $OUT/cuda_tests/ as they come.
#   bash benchmarks/device/cuda_tests.sh [test files...]     (from the repo root on the device; carry .whl)
# Defaults to the kernel and architecture files below; CUDA_TEST_LIMIT (s per file, default 150) and
# CUDA_TESTS_TOTAL (s, default 540) bound the call.
set -u
. benchmarks/device/install.sh; mkdir -p "$OUT/cuda_tests"
FILES=("$@")
if [ ${#FILES[@]} -eq 0 ]; then
  FILES=(test_triton_scan test_ssd test_s4d test_moe test_architectures test_decoding test_rms_norm
         test_triton_conv1d test_causal_conv1d test_mamba_inner test_selective_scan_dispatch test_ptx_scans
         test_gemv test_packing test_streaming_family test_inference_cache test_score test_tokenizers test_audio_lm)
fi
nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv,noheader | tee "$OUT/cuda_tests/device.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  | tee -a "$OUT/cuda_tests/device.txt"
START=$SECONDS
for f in "${FILES[@]}"; do
  f=${f%.py}; f=${f#tests/}
  left=$(( ${CUDA_TESTS_TOTAL:-540} - (SECONDS - START) ))
  if [ "$left" -lt 20 ]; then echo "$f: not run (call budget spent)" | tee -a "$OUT/cuda_tests/summary.txt"; continue; fi
  limit=$(( left < ${CUDA_TEST_LIMIT:-150} ? left : ${CUDA_TEST_LIMIT:-150} ))
  t0=$SECONDS
  (cd /tmp && timeout -k 10 "$limit" python3 -c 'import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))' \
    "$R/tests/$f.py" -v -p no:cacheprovider -rfEs --tb=short --durations=8 --junitxml="$OUT/cuda_tests/$f.xml" \
    > "$OUT/cuda_tests/$f.log" 2>&1)
  rc=$?
  echo "$f: rc $rc, $(( SECONDS - t0 )) s, $(tail -n 1 "$OUT/cuda_tests/$f.log")" | tee -a "$OUT/cuda_tests/summary.txt"
  # The failures reach stdout (the call's output tail), since only a few files come back from $OUT.
  grep -E "^(FAILED|ERROR) |Error:|^E  | FAILED" "$OUT/cuda_tests/$f.log" | head -n 40
done
# One archive, so every log comes back (the device returns a limited number of files).
tar -czf "$OUT/cuda_tests.tar.gz" -C "$OUT" cuda_tests && rm -rf "$OUT/cuda_tests"
save_triton_cache
