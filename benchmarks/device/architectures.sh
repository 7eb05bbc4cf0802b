#!/usr/bin/env bash
# One device call for benchmarks/architectures.py (issue 14 item 7). Needs the carried wheels (.whl) and the small
# data copied beforehand, here, by:  python benchmarks/architectures.py --prepare-data .carry/archbench
#   bash benchmarks/device/architectures.sh          (from the repo root on the device; writes under $OUT/arch)
#   ARCH_ARGS="--archs s4d,moe" ARCH_BUDGET=300 bash benchmarks/device/architectures.sh   (a subset)
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/arch"
R=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/sq . > "$OUT/install.log" 2>&1 \
  || { tail -n 20 "$OUT/install.log"; exit 1; }
export PYTHONPATH=/tmp/sq:/tmp/site PYTHONUNBUFFERED=1
cd /tmp && timeout "${ARCH_TIMEOUT:-470}" python3 "$R/benchmarks/architectures.py" \
  --dna "$R/.carry/archbench/ecoli_536.fna.gz" --fsdd "$R/.carry/archbench/fsdd" \
  --out "$OUT/arch" --overwrite --budget-s "${ARCH_BUDGET:-400}" ${ARCH_ARGS:-} 2>&1 | tee "$OUT/arch/log.txt"
