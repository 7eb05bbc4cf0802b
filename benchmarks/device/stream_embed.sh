#!/usr/bin/env bash
# Streamed per-position embedding through the CLI, end to end: a random d_model 128 x 4-layer checkpoint over a
# synthetic contig of $1 bases (default 8 M), chunk $2 (default: the CLI's, 2^18 on a GPU). Prints bases/s.
set -u
N=${1:-8000000}; CHUNK=${2:-}
cd /tmp && python3 - "$N" <<'PY'
import sys, numpy as np
from seqssm.config import MambaConfig
from seqssm.models import MambaLMHeadModel
MambaLMHeadModel(MambaConfig(d_model=128, n_layer=4, vocab_size=16)).save_pretrained("/tmp/ck128")
n = int(sys.argv[1])
seq = np.frombuffer(b"ACGT", dtype=np.uint8)[np.random.default_rng(0).integers(0, 4, n)]
lines = seq[: n // 80 * 80].reshape(-1, 80)
with open("/tmp/big.fa", "wb") as fh:
    fh.write(b">chrZ\n")
    fh.write(np.concatenate([lines, np.full((len(lines), 1), 10, np.uint8)], 1).tobytes())
PY
rm -rf /tmp/emb
T0=$(date +%s.%N)
printf 'from seqssm.cli import main\nmain()\n' > /tmp/run_cli.py
PROF=""; [ "${PROFILE:-0}" = 1 ] && PROF="-m cProfile -s cumtime"
python3 $PROF /tmp/run_cli.py embed /tmp/ck128 /tmp/big.fa --out /tmp/emb --per-position --stream --region chrZ ${CHUNK:+--chunk-size "$CHUNK"} 2>&1 | head -n 70
T1=$(date +%s.%N)
python3 -c "n=$N//80*80; t=$T1-$T0; print(f'stream embed: {n:,} bases in {t:.2f} s = {n/t/1e6:.2f} M bases/s end to end (chunk ${CHUNK:-default})')"
du -sh /tmp/emb
