"""benchmarks/bench_stream_embed.py --smoke: the table and its files (tiny sizes, CPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_writes_the_table_and_json(tmp_path, monkeypatch):
    # The benchmark turns progress bars on for itself; in-process that must not leak into later tests' stderr.
    monkeypatch.setenv("SEQSSM_PROGRESS", "0")
    spec = importlib.util.spec_from_file_location("bench_stream_embed", REPO / "benchmarks" / "bench_stream_embed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    text = bench.main(["--smoke", "--out", str(tmp_path / "out")])
    assert "| cold |" in text and "| warm |" in text
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["run"] for r in saved["runs"]] == ["cold", "warm"]
    assert all(r["chunks"] == 6 and r["mbases_per_s"] > 0 for r in saved["runs"])  # 3000 bases in chunks of 512
    assert all(v > 0 for v in saved["pieces_s"].values())
    assert (tmp_path / "out" / "results.md").read_text() == text
