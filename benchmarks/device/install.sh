# Sourced by the device scripts: installs the carried wheels (.whl) and seqssm itself outside the repo, and sets
# R (the repo root), OUT and PYTHONPATH. Usage: `. benchmarks/device/install.sh` from the repo root.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
R=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/sq . > "$OUT/install.log" 2>&1 \
  || { tail -n 20 "$OUT/install.log"; exit 1; }
export PYTHONPATH=/tmp/sq:/tmp/site PYTHONUNBUFFERED=1
# Triton's compile cache travels between calls: a fresh machine compiled every kernel again, 40-140 s of a call
# (2026-12-04). Restored from .carry/triton/triton-cache.tgz.* when the call carries .carry/triton; `save_triton_cache` (at the
# end of a script) writes the cache as 15 MB parts $OUT/triton-cache.tgz.NN, which go into .carry/triton/ here for the
# next call. A script timing cold compiles sets its own TRITON_CACHE_DIR.
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache}
mkdir -p "$TRITON_CACHE_DIR"
if compgen -G ".carry/triton/triton-cache.tgz.*" > /dev/null; then
  cat .carry/triton/triton-cache.tgz.* | tar -xzf - -C "$TRITON_CACHE_DIR" && echo "triton cache restored: $(du -sh "$TRITON_CACHE_DIR" | cut -f1)"
fi
save_triton_cache() {
  rm -f "$OUT"/triton-cache.tgz.*
  tar -czf - -C "$TRITON_CACHE_DIR" . | split -b 15M -d - "$OUT/triton-cache.tgz."
  echo "triton cache saved: $(du -ch "$OUT"/triton-cache.tgz.* | tail -1 | cut -f1) in $(ls "$OUT"/triton-cache.tgz.* | wc -l) parts"
}
