#!/usr/bin/env bash
# One device call: install what the image lacks, build mamba_ssm (+ causal-conv1d) in the background, run
# seqssm-only work meanwhile, then the side-by-side benchmark. Usage: bash benchmarks/device/run_model_bench.sh "BENCH ARGS"
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/progress.log"; }
. benchmarks/device/install.sh
# Every subpackage must be in the installed copy, or the whole call is wasted: stop here if one is not.
(cd /tmp && python3 -c "import pkgutil, seqssm; [__import__(m.name) for m in pkgutil.walk_packages(seqssm.__path__, 'seqssm.') if '.data' not in m.name and not m.name.endswith('__main__')]") || { log "install incomplete"; exit 1; }
log "installed seqssm"
if [ -f .carry/mamba_ssm.tar.gz ] && [ "${NO_PEER:-0}" != 1 ]; then
  mkdir -p /tmp/b && (cd /tmp/b && tar xzf "$OLDPWD/.carry/mamba_ssm.tar.gz" && tar xzf "$OLDPWD/.carry/causal_conv1d.tar.gz")
  # causal-conv1d builds beside mamba_ssm but nothing waits for it: POST (the rows with it) runs only if it is
  # importable by then, so a slow build cannot eat the call.
  if [ "${WITH_CC:-0}" = 1 ]; then
    (cd /tmp/b/causal_conv1d-1.7.0 && CAUSAL_CONV1D_FORCE_BUILD=TRUE MAX_JOBS=6 python3 -m pip wheel -q --no-build-isolation --no-deps -w /tmp/wh_cc . > /tmp/b/cc.log 2>&1 \
       && python3 -m pip install -q --no-deps --no-index --target /tmp/cc /tmp/wh_cc/*.whl >> /tmp/b/cc.log 2>&1 && touch /tmp/b/cc_done) &
  fi
  (cd /tmp/b/mamba_ssm-2.3.2.post1 && MAMBA_FORCE_BUILD=TRUE MAX_JOBS=12 python3 -m pip wheel -q --no-build-isolation --no-deps -w /tmp/wh . > /tmp/b/mamba.log 2>&1 \
     && python3 -m pip install -q --no-deps --no-index --target /tmp/mamba /tmp/wh/*.whl >> /tmp/b/mamba.log 2>&1; touch /tmp/b/done) &
fi
if [ -n "${PRE:-}" ]; then log "pre: $PRE"; bash -c "$PRE" 2>&1 | tee -a "$OUT/pre.log"; fi
if [ -f .carry/mamba_ssm.tar.gz ] && [ "${NO_PEER:-0}" != 1 ]; then
  while [ ! -f /tmp/b/done ]; do sleep 5; done
  log "built peer"; for f in /tmp/b/*.log; do tail -n 3 "$f"; done | tee -a "$OUT/progress.log"; (cd /tmp && PYTHONPATH=/tmp/mamba:$PYTHONPATH python3 -c "import mamba_ssm.models.mixer_seq_simple; print(\"peer ok\")") 2>&1 | tail -n 2 | tee -a "$OUT/progress.log"
  cp /tmp/b/*.log "$OUT/" 2>/dev/null
fi
export PYTHONPATH=/tmp/sq:/tmp/site:/tmp/mamba
if [ -n "${POST_NOCONV:-}" ]; then log "post (no causal-conv1d): $POST_NOCONV"; bash -c "$POST_NOCONV" 2>&1 | tee -a "$OUT/post_noconv.log"; fi
export PYTHONPATH=/tmp/sq:/tmp/site:/tmp/mamba:/tmp/cc
if [ -n "${POST:-}" ]; then
  # CC_WAIT: seconds POST may still wait for causal-conv1d (default 0; on 2026-12-04 it had not built after 400 s
  # with MAX_JOBS=6 beside mamba_ssm's 12).
  for _ in $(seq 1 $(( ${CC_WAIT:-0} / 5 ))); do [ -f /tmp/b/cc_done ] && break; sleep 5; done
  if [ -f /tmp/b/cc_done ]; then log "post (with causal-conv1d): $POST"; bash -c "$POST" 2>&1 | tee -a "$OUT/post.log"
  else log "post skipped: causal-conv1d not built yet"; tail -n 5 /tmp/b/cc.log 2>/dev/null; fi
fi
save_triton_cache; log "done"
