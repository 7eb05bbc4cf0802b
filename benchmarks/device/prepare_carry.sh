#!/usr/bin/env bash
# Builds here (the CPU machine, from the repo root) the git-ignored files the device scripts carry, so that a
# fresh checkout is ready for a GPU call in a minute: a new session's work tree has none of them.
#   bash benchmarks/device/prepare_carry.sh            # all of it; each piece is skipped when already there
# .whl/                        cp312 wheels the H200 image lacks (pysam, biopython, soundfile, cffi, pycparser)
# .carry/mamba_ssm.tar.gz      mamba_ssm 2.3.2.post1 sdist patched for sm_90 only, imports guarded (the peer)
# .carry/causal_conv1d.tar.gz  causal-conv1d 1.7.0 sdist patched for sm_90 only
# .carry/clsdata/              classification.sh's data, in ../shared/data's layout (30 MB)
# .carry/archbench/            architectures.sh's data (architectures.py --prepare-data)
# Carry paths one by one (64 MiB in all): never the whole .carry. ../shared/notes/side-by-side.md has the why.
set -eu
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
[ -x "$PY" ] || { echo "no $PY: run 'make .venv/.seqssm-installed' first" >&2; exit 2; }
pin() { grep -i "^$1==" constraints.txt | cut -d= -f3; }
mkdir -p .whl .carry

if ! compgen -G ".whl/pysam-*.whl" > /dev/null; then
  echo "wheels -> .whl"
  for pkg in pysam biopython soundfile cffi pycparser; do
    "$PY" -m pip download -q --no-deps --only-binary :all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
      --platform any -d .whl "$pkg==$(pin "$pkg")" 2>&1 | grep -v "^WARNING: Location" || true
  done
fi

sdist() {  # NAME VERSION OUT: download the sdist, keep sm_90 only, guard mamba_ssm's imports, repack
  local name=$1 version=$2 out=$3 tmp
  [ -f "$out" ] && return 0
  echo "$name $version -> $out"
  tmp=$(mktemp -d)
  MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE "$PY" -m pip download -q --no-deps --no-binary :all: \
    --no-build-isolation -d "$tmp" "$name==$version" 2>&1 | grep -v "^WARNING: Location" || true
  (cd "$tmp" && tar xzf ./*.tar.gz && rm ./*.tar.gz)
  "$PY" - "$tmp"/*/ <<'EOF'
import re, sys
from pathlib import Path
root = Path(sys.argv[1])
setup = root / "setup.py"
pair = re.compile(r'^(\s*)cc_flag\.append\("-gencode"\)\n\1cc_flag\.append\("arch=compute_(\d+),code=sm_\d+"\)$', re.M)
text, n = pair.subn(lambda m: m.group(0) if m.group(2) == "90" else f"{m.group(1)}pass", setup.read_text())
assert 'arch=compute_90,code=sm_90' in text and n >= 2, f"{setup}: gencode list not found"
setup.write_text(text)
init = root / "mamba_ssm" / "__init__.py"
if init.is_file():  # Mamba-3 needs tilelang, which the image lacks
    lines = [f"try:\n    {line}\nexcept Exception:\n    pass" if line.startswith(("from ", "import ")) else line
             for line in init.read_text().splitlines()]
    init.write_text("\n".join(lines) + "\n")
EOF
  (cd "$tmp" && tar czf "$OLDPWD/$out" ./*/)
  rm -rf "$tmp"
}
sdist mamba-ssm 2.3.2.post1 .carry/mamba_ssm.tar.gz
sdist causal-conv1d 1.7.0 .carry/causal_conv1d.tar.gz

if [ ! -d .carry/clsdata ]; then
  echo "classification data -> .carry/clsdata"
  mkdir -p .carry/clsdata/{dna,labelled,audio}
  cp "$DATA"/labelled/ecoli_{promoters,sigma_subtypes}.tsv .carry/clsdata/labelled/
  cp "$DATA"/dna/{ecoli_536.fna.gz,ce_chrI_1mb.fa,lambda_phage.fa.gz} .carry/clsdata/dna/
  cp -r "$DATA"/audio/fsdd .carry/clsdata/audio/
fi
if [ ! -d .carry/archbench ]; then
  echo "architectures data -> .carry/archbench"
  (cd /tmp && "$OLDPWD/$PY" "$OLDPWD/benchmarks/architectures.py" --prepare-data "$OLDPWD/.carry/archbench")
fi
du -sh .whl .carry/* | sed 's/^/  /'
