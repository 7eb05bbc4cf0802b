#!/usr/bin/env bash
# `seqssm embed --per-position --stream` end to end through the CLI (issue 20), with per-stage start-up times:
# a random d_model 128 x 4-layer checkpoint over a synthetic contig of $1 bases (default 64 M), chunk $2
# (default: the CLI's, 2^18 on a GPU). From the repo root on the device (installs the carried wheels, as the
# other device scripts; SEQSSM_INSTALLED=1 skips that when seqssm is importable already):
#   bash benchmarks/device/stream_embed.sh [BASES] [CHUNK]        (about 100 s at 64 Mbp on an H200)
# Runs (RUNS, default 3; each output removed before the next, 16 GB at 64 Mbp):
#   1: first process on this FASTA, every stage timed (benchmarks/stream_embed_startup.py): the .fai is built,
#      and on a fresh machine the Triton cache is cold;
#   2: the plain console script, no timing wrapper, warm: the end-to-end number against the >= 4 M bases/s target;
#   3: warm again, every stage timed (where the start-up of a warm process goes).
# Output: $OUT/stream_embed_cli/ (run*.json, log.txt); each run prints M bases/s end to end (shell to shell).
set -u
N=${1:-64000000}; CHUNK=${2:-}; RUNS=${RUNS:-3}
if [ "${SEQSSM_INSTALLED:-0}" != 1 ]; then . benchmarks/device/install.sh; fi
R=${R:-$PWD}; OUT=${OUT:-/tmp/out}; D="$OUT/stream_embed_cli"; mkdir -p "$D"
export SEQSSM_PROGRESS=0
{
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader 2>/dev/null
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) x $(nproc); disk free: $(df -h /tmp | tail -1 | awk '{print $4}')"
cd /tmp && python3 - "$N" <<'PY'
import sys, time
import numpy as np
t = time.perf_counter()
import torch, triton
from seqssm.config import MambaConfig
from seqssm.models import MambaLMHeadModel
torch.manual_seed(0)
MambaLMHeadModel(MambaConfig(d_model=128, n_layer=4, vocab_size=16)).save_pretrained("/tmp/ck128")
n = int(sys.argv[1]) // 80 * 80
letters = np.frombuffer(b"ACGT", dtype=np.uint8)
rng = np.random.default_rng(0)
with open("/tmp/big.fa", "wb") as fh:
    fh.write(b">chrZ\n")
    for s in range(0, n, 8_000_000):
        lines = letters[rng.integers(0, 4, min(8_000_000, n - s))].reshape(-1, 80)
        fh.write(np.concatenate([lines, np.full((len(lines), 1), 10, np.uint8)], 1).tobytes())
print(f"torch {torch.__version__}, triton {triton.__version__}; checkpoint and {n:,}-base FASTA written in "
      f"{time.perf_counter() - t:.1f} s")
PY
rm -f /tmp/big.fa.fai
ARGS="embed /tmp/ck128 /tmp/big.fa --out /tmp/emb --per-position --stream --region chrZ ${CHUNK:+--chunk-size $CHUNK}"
# The console script as pip installed it (it calls seqssm.cli:console); else the same function by hand.
SEQSSM_BIN=$(command -v seqssm || echo /tmp/sq/bin/seqssm)
[ -x "$SEQSSM_BIN" ] || { printf 'from seqssm.cli import console\nconsole()\n' > /tmp/seqssm_console.py
                          SEQSSM_BIN="python3 /tmp/seqssm_console.py"; }
for RUN in $(seq 1 "$RUNS"); do
  rm -rf /tmp/emb
  echo; echo "## run $RUN: $([ "$RUN" = 2 ] && echo "plain console script $SEQSSM_BIN" || echo "stages timed")"
  T0=$(date +%s.%N)
  if [ "$RUN" = 2 ]; then
    timeout 200 $SEQSSM_BIN $ARGS 2>&1 | tail -n 5; END=""
  else
    timeout 200 env STARTUP_T0="$T0" python3 "$R/benchmarks/stream_embed_startup.py" --json "$D/run$RUN.json" -- $ARGS \
      2>&1 | tee "$D/run$RUN.txt" | tail -n 40
    END=$(grep -o 'python_end_epoch [0-9.]*' "$D/run$RUN.txt" | cut -d' ' -f2)
  fi
  T1=$(date +%s.%N)
  python3 -c "n=$N//80*80; t=$T1-$T0; end='${END}'
print(f'run $RUN: {n:,} bases in {t:.2f} s = {n/t/1e6:.2f} M bases/s end to end (shell to shell, chunk ${CHUNK:-default})'
      + (f'; process exit after main {$T1-float(end):.2f} s' if end else ''))"
  du -sh /tmp/emb 2>/dev/null
done
rm -rf /tmp/emb
} 2>&1 | tee "$D/log.txt"
