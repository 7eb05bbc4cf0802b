#!/usr/bin/env bash
# One device call for benchmarks/architectures.py (issue 14 item 7). Needs the carried wheels (.whl) and the small
# data copied beforehand, here, by:  python benchmarks/architectures.py --prepare-data .carry/archbench
#   bash benchmarks/device/architectures.sh          (from the repo root on the device; writes under $OUT/arch)
#   ARCH_ARGS="--archs s4d,moe" ARCH_BUDGET=300 bash benchmarks/device/architectures.sh   (a subset)
# A call is capped at 10 minutes and one seed of all five with FSDD takes about 12 on a cold machine, so split it
# and merge the JSONs (here): python benchmarks/architectures.py --merge A.json B.json ... --out DIR
# (benchmarks/runs/ keeps the JSONs of earlier calls; each row says how long its phases took).
set -u
. benchmarks/device/install.sh; mkdir -p "$OUT/arch"
# timeout -k: the fine-tune catches SIGTERM to save its state and the benchmark would go on to the next
# architecture (seen 2026-12-04), so KILL follows 10 s later.
cd /tmp && timeout -k 10 "${ARCH_TIMEOUT:-470}" python3 "$R/benchmarks/architectures.py" \
  --dna "$R/.carry/archbench/ecoli_536.fna.gz" --fsdd "$R/.carry/archbench/fsdd" \
  --out "$OUT/arch" --overwrite --budget-s "${ARCH_BUDGET:-400}" ${ARCH_ARGS:-} 2>&1 | tee "$OUT/arch/log.txt"
save_triton_cache
