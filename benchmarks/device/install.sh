# Sourced by the device scripts: installs the carried wheels (.whl) and seqssm itself outside the repo, and sets
# R (the repo root), OUT and PYTHONPATH. Usage: `. benchmarks/device/install.sh` from the repo root.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
R=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/sq . > "$OUT/install.log" 2>&1 \
  || { tail -n 20 "$OUT/install.log"; exit 1; }
export PYTHONPATH=/tmp/sq:/tmp/site PYTHONUNBUFFERED=1
