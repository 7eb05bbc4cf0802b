"""benchmarks/architectures.py --smoke: every architecture gets a row (tiny sizes, CPU, real data)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SEQSSM_BENCH_SMOKE") != "1",
                    reason="2-3 minutes on 2 CPU cores: set SEQSSM_BENCH_SMOKE=1 to run the benchmark's smoke test")
@pytest.mark.skipif(not (DATA / "dna" / "ecoli_536.fna.gz").is_file() or not (DATA / "audio" / "fsdd").is_dir(),
                    reason="needs ../shared/data (E. coli genome and FSDD), see its README")
def test_smoke_table_has_every_architecture(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_architectures", REPO / "benchmarks" / "architectures.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    text = bench.main(["--smoke", "--data-root", str(DATA), "--out", str(tmp_path / "out")])
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0][2:].split(" ")[0] for row in rows] == list(bench.ARCHS)
    assert not any("error" in row for row in rows), text
    saved = json.loads((tmp_path / "out" / "architectures.json").read_text())
    assert [r["arch"] for r in saved["rows"]] == list(bench.ARCHS)
    assert all(r["val_bits"] > 0 and r["decode_b16"] > 0 for r in saved["rows"])
    # The same fixed step budget and the same two seeds for every architecture; the FSDD run not time-cut.
    assert all([s["seed"] for s in r["seeds"]] == [0, 1] and r["n_seeds"] == 2 for r in saved["rows"])
    assert all(s["steps_done"] == saved["settings"]["steps"] for r in saved["rows"] for s in r["seeds"])
    assert all(r["val_bits_sd"] >= 0 and r["fsdd_steps"] > 0 and not r["fsdd_cut"] for r in saved["rows"])
    assert " ± " in text and "(2)" in text
