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


def _bench():
    spec = importlib.util.spec_from_file_location("bench_architectures", REPO / "benchmarks" / "architectures.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _run(path: Path, rows: list[dict], steps: int = 400, baseline: dict | None = None) -> Path:
    settings = dict(_bench().GPU, steps=steps)
    path.write_text(json.dumps({"header": f"run {path.stem}", "settings": settings, "rows": rows,
                                "baseline": baseline, "note": ""}))
    return path


def _seed(seed: int, bits: float) -> dict:
    return {"seed": seed, "val_bits": bits, "train_tok_s": 1000.0 + seed, "first_step_s": 9.0, "steps_done": 400}


def test_merge_fills_seeds_and_failed_parts_from_other_runs(tmp_path):
    """Three device calls' JSONs as one table: seeds united by number, a part that failed in one call (FSDD)
    filled from another, an architecture that failed everywhere keeps its error, other settings refused."""
    bench = _bench()
    a = _run(tmp_path / "a.json", [
        {"arch": "mamba", "d_model": 8, "params": 10, "active": 10, "seeds": [_seed(0, 2.0)], "decode_b1": 5.0,
         "fsdd_acc": 0.9, "fsdd_steps": 4},
        {"arch": "s4d", "d_model": 8, "params": 10, "active": 10, "seeds": [_seed(0, 2.2)], "decode_b1": 3.0,
         "error": "RuntimeError: killed"}], baseline={"accuracy": 0.5})
    b = _run(tmp_path / "b.json", [
        {"arch": "s4d", "d_model": 8, "params": 10, "active": 10, "seeds": [_seed(0, 9.9)], "fsdd_acc": 0.8,
         "fsdd_steps": 4},
        {"arch": "moe", "d_model": 8, "params": 10, "active": 6, "seeds": [], "error": "OOM"}])
    c = _run(tmp_path / "c.json", [
        {"arch": a_, "d_model": 8, "params": 10, "active": 10, "seeds": [_seed(1, bits), _seed(0, 7.0)]}
        for a_, bits in (("mamba", 2.4), ("s4d", 2.6))])
    text = bench.main(["--merge", str(a), str(b), str(c), "--out", str(tmp_path / "out")])
    saved = json.loads((tmp_path / "out" / "architectures.json").read_text())
    rows = {r["arch"]: r for r in saved["rows"]}
    assert list(rows) == ["mamba", "s4d", "moe"]  # ARCHS order
    assert [s["val_bits"] for s in rows["mamba"]["seeds"]] == [2.0, 2.4]  # a's seed 0 wins over c's
    assert rows["mamba"]["val_bits"] == pytest.approx(2.2) and rows["mamba"]["n_seeds"] == 2
    # s4d: b (no error) comes first, so its seed 0 (9.9) and FSDD win; a's decode fills what b lacks.
    assert "error" not in rows["s4d"] and rows["s4d"]["fsdd_acc"] == 0.8 and rows["s4d"]["decode_b1"] == 3.0
    assert [s["val_bits"] for s in rows["s4d"]["seeds"]] == [9.9, 2.6]
    assert rows["moe"]["error"] == "OOM" and saved["baseline"] == {"accuracy": 0.5}
    assert "not every seed for moe" in text and "(merged from 3 runs" in text
    other = _run(tmp_path / "d.json", [], steps=600)
    with pytest.raises(SystemExit, match="other settings \\(steps\\)"):
        bench.main(["--merge", str(a), str(other), "--out", str(tmp_path / "out2")])
