"""benchmarks/fsdd_step.py on the CPU (tiny model, FSDD-named tone clips): it stops after the steps asked for and
reports each step, the batch lengths and the summary the device script prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def fsdd_like(folder: Path) -> Path:
    """{digit}_{speaker}_{take}.wav clips of 0.1-0.3 s at 8 kHz: takes 0-4 are FSDD's test split."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for digit in range(2):
        for take in range(10):
            n = int(rng.integers(800, 2400))
            wave = 0.3 * np.sin(2 * np.pi * (300 + 1500 * digit) * np.arange(n) / 8000)
            sf.write(folder / f"{digit}_ann_{take}.wav", wave.astype(np.float32), 8000, subtype="PCM_16")
    return folder


def run(tmp_path: Path, pad_tokens: str, *extra: str) -> dict:
    out = tmp_path / f"pad{pad_tokens}.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "fsdd_step.py"), "--fsdd", str(tmp_path / "fsdd"),
           "--steps", "3", "--device", "cpu", "--workers", "0", "--d-model", "8", "--n-layer", "1", "--batch", "4",
           "--patch", "8", "--clip", "0.25", "--label", "t", "--json", str(out), *extra]
    env = {**os.environ, "SEQSSM_PAD_TOKENS": pad_tokens, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sum(line.startswith("t step ") for line in proc.stdout.splitlines()) == 3, proc.stdout
    return json.loads(out.read_text())


def test_three_steps_with_and_without_rounding(tmp_path):
    fsdd_like(tmp_path / "fsdd")
    rounded, plain = run(tmp_path, "16"), run(tmp_path, "1", "--specialize-norm-rows")
    assert [r["step"] for r in rounded["rows"]] == [1, 2, 3] and rounded["summary"]["steps"] == 3
    assert rounded["summary"]["pad_tokens"] == plain["summary"]["pad_tokens"] == 1  # on the GPU 16 and 1
    assert plain["summary"]["specialize_norm_rows"] and not rounded["summary"]["specialize_norm_rows"]
    # The CPU takes the chunked scan: nothing to compile, and batches are not rounded (classify.pad_tokens_for).
    assert all(r["samples"] % 8 == 0 for r in rounded["rows"] + plain["rows"])
    assert any(r["samples"] % (16 * 8) for r in rounded["rows"]), rounded["rows"]
    assert rounded["summary"]["compiles"] == 0
