#!/usr/bin/env bash
# One device call for benchmarks/classification.py --device cuda (issue 16 item 5): the four shared tasks, one
# process per task side by side on the one GPU, each over the split seeds; then the paired table.
# Needs, copied beforehand into git-ignored folders of the checkout that travels (the shared data does not):
#   the wheels (.whl) and the data in ../shared/data's layout under .carry/clsdata:
#   mkdir -p .carry/clsdata/{dna,labelled,audio}
#   cp ../shared/data/labelled/ecoli_{promoters,sigma_subtypes}.tsv .carry/clsdata/labelled/
#   cp ../shared/data/dna/{ecoli_536.fna.gz,ce_chrI_1mb.fa,lambda_phage.fa.gz} .carry/clsdata/dna/
#   cp -r ../shared/data/audio/fsdd .carry/clsdata/audio/
# Run from the repo root on the device (carry .whl and .carry/clsdata):
#   bash benchmarks/device/classification.sh
#   CLS_TASKS="promoters sigma" CLS_SEEDS=0-4 CLS_TIMEOUT=420 CLS_ARGS="--set epochs=5" bash benchmarks/device/classification.sh
# Writes $OUT/table.txt (the paired table), rows.tsv and results.md (benchmarks/classification.py's), log.txt
# (GPU, then each task's progress lines) and runs.tgz (every row's JSON and run.json, no checkpoints). Each task
# stops at CLS_TIMEOUT seconds; the rows it finished are kept.
set -u
. benchmarks/device/install.sh
W=/tmp/cls; rm -rf "$W"; mkdir -p "$W"
DATA=${CLS_DATA:-$R/.carry/clsdata}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$W/gpu.txt" 2>&1
python3 -c "import torch, triton, sklearn; print('torch', torch.__version__, 'triton', triton.__version__, \
'scikit-learn', sklearn.__version__)" >> "$W/gpu.txt" 2>&1
for t in ${CLS_TASKS:-segments promoters fsdd sigma}; do
  (cd /tmp && timeout "${CLS_TIMEOUT:-420}" python3 "$R/benchmarks/classification.py" --device "${CLS_DEVICE:-cuda}" --tasks "$t" \
     --seeds "${CLS_SEEDS:-0-4}" --data-root "$DATA" --out "$W/$t" --overwrite ${CLS_ARGS:-} \
     > "$W/log_$t.txt" 2>&1) &
done
wait
cd /tmp && python3 "$R/benchmarks/classification.py" --summarize --out "$W" | tee "$OUT/table.txt"
cp "$W/rows.tsv" "$W/results.md" "$OUT/" 2>/dev/null
cat "$W/gpu.txt" "$W"/log_*.txt > "$OUT/log.txt"
tar czf "$OUT/runs.tgz" -C "$W" --exclude=checkpoint --exclude=trainer_state --exclude=data \
  --exclude='*_predictions.tsv' .
