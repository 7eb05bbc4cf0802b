#!/usr/bin/env bash
# One device call for benchmarks/classification.py --device cuda (issue 16 item 5): the four shared tasks, one
# process per group of split seeds (CLS_GROUPS, default "0,2,4 1,3"; segments one per seed), side by side on the
# one GPU; then the paired table. 2026-12-03: 20 processes (CLS_GROUPS="0 1 2 3 4") ran ~0.2 s a step, CPU-bound.
# Needs, copied beforehand into git-ignored folders of the checkout that travels (the shared data does not):
#   the wheels (.whl) and the data in ../shared/data's layout under .carry/clsdata:
#   mkdir -p .carry/clsdata/{dna,labelled,audio}
#   cp ../shared/data/labelled/ecoli_{promoters,sigma_subtypes}.tsv .carry/clsdata/labelled/
#   cp ../shared/data/dna/{ecoli_536.fna.gz,ce_chrI_1mb.fa,lambda_phage.fa.gz} .carry/clsdata/dna/
#   cp -r ../shared/data/audio/fsdd .carry/clsdata/audio/
# Run from the repo root on the device (carry .whl and .carry/clsdata):
#   bash benchmarks/device/classification.sh
#   CLS_TASKS="promoters sigma" CLS_GROUPS="0-4" CLS_TIMEOUT=420 CLS_ARGS="--set epochs=5" bash benchmarks/device/classification.sh
# Writes $OUT/table.txt (the paired table), rows.tsv and results.md (benchmarks/classification.py's), log.txt
# (GPU, then each task's progress lines) and runs.tgz (every row's JSON and run.json, no checkpoints). Each task
# stops at CLS_TIMEOUT seconds; the rows it finished are kept, and the table is copied into $OUT every
# CLS_SNAPSHOT_S seconds (default 20), so a call cut at its limit still brings back what was done.
# From a helper's worktree, run a copy of its tracked files: .carry/src-NAME (see the helper notes), e.g.
#   cd .carry/src-score && ln -sfn ../../.whl .whl && CLS_DATA=$PWD/../clsdata bash benchmarks/device/classification.sh
set -u
. benchmarks/device/install.sh
W=/tmp/cls; rm -rf "$W"; mkdir -p "$W"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # 11 processes on 16 cores: one thread each
DATA=${CLS_DATA:-$R/.carry/clsdata}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$W/gpu.txt" 2>&1
python3 -c "import torch, triton, sklearn; print('torch', torch.__version__, 'triton', triton.__version__, \
'scikit-learn', sklearn.__version__)" >> "$W/gpu.txt" 2>&1
# Each task's seeds in CLS_GROUPS groups, one process a group: 11 processes share the GPU (and the 16 CPU cores the
# baselines fit on); a group that hits CLS_TIMEOUT keeps its finished seeds.
for t in ${CLS_TASKS:-segments promoters fsdd sigma}; do
  groups=${CLS_GROUPS:-0,2,4 1,3}
  [ "$t" = segments ] && groups=${CLS_SEG_GROUPS:-0 1 2 3 4}  # its k-mer baselines are the slowest part
  for g in $groups; do
    (cd /tmp && timeout -k 10 "${CLS_TIMEOUT:-420}" python3 "$R/benchmarks/classification.py" --device "${CLS_DEVICE:-cuda}" \
       --tasks "$t" --seeds "$g" --data-root "$DATA" --out "$W/${t}_${g//,/}" --overwrite ${CLS_ARGS:-} \
       > "$W/log_${t}_${g//,/}.txt" 2>&1) &
  done
done
snapshot() {  # the table so far into $OUT: what comes back if the call is cut at its limit
  (cd /tmp && python3 "$R/benchmarks/classification.py" --summarize --out "$W" > "$OUT/table.txt" 2>&1)
  cp "$W/rows.tsv" "$W/results.md" "$OUT/" 2>/dev/null
  cat "$W/gpu.txt" "$W"/log_*.txt > "$OUT/log.txt" 2>/dev/null
}
( while sleep "${CLS_SNAPSHOT_S:-20}"; do snapshot; done ) & watcher=$!
wait $(jobs -p | grep -v "^$watcher$")
kill $watcher 2>/dev/null
snapshot; cat "$OUT/table.txt"
tar czf "$OUT/runs.tgz" -C "$W" --exclude=checkpoint --exclude=trainer_state --exclude=data \
  --exclude='*_predictions.tsv' .
