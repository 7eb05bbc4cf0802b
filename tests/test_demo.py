"""`seqssm demo`: a step budget (not a wall clock), progress lines, an honest summary, the same outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seqssm.data import lambda_phage_fasta
from seqssm.pipelines import demo as demo_module
from seqssm.pipelines.configs_sequence import DemoConfig
from seqssm.pipelines.demo import cpu_threads, demo, markov_bits, split_genome


def test_defaults_are_what_the_docstring_says():
    cfg = DemoConfig()
    doc = " ".join(demo.__doc__.split())
    assert f"for ``cfg.steps`` steps (default {cfg.steps})" in doc
    assert cfg.steps == 400 and cfg.minutes == 20.0 and cfg.threads is None
    m = demo_module
    assert (m.D_MODEL, m.N_LAYER, m.D_STATE, m.EXPAND, m.WINDOW, m.BATCH, m.LR) == (64, 2, 4, 1, 256, 16, 5e-3)
    assert f"d_model {m.D_MODEL}, {m.N_LAYER} layers, d_state {m.D_STATE}, expand {m.EXPAND}" in doc
    assert f"{m.BATCH} windows of {m.WINDOW} bases" in doc
    assert "learning rate of 5e-3" in doc


def test_cpu_threads_leaves_busy_cores_alone(monkeypatch):
    monkeypatch.setattr(demo_module.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(demo_module.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert cpu_threads(None) == 2  # a quiet 2-core machine: both cores
    monkeypatch.setattr(demo_module.os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert cpu_threads(None) == 1
    monkeypatch.setattr(demo_module.os, "getloadavg", lambda: (14.0, 0.0, 0.0))
    assert cpu_threads(None) == 1  # never fewer than one
    assert cpu_threads(3) == 3  # --threads wins


def test_split_matches_pretrain_and_markov_is_sane():
    train, val = split_genome(lambda_phage_fasta())
    assert len(train) + len(val) == 48502 and len(val) == round(0.1 * 48502)
    order0 = markov_bits(train, val, 0, 4)
    assert 1.99 < order0 < 2.01  # lambda's base composition is close to uniform
    assert markov_bits(train, val, 4, 4) < order0  # context helps a little
    # a Markov model fitted on a periodic sequence predicts it almost perfectly
    periodic = np.tile(np.array([0, 1, 2, 3, 3, 2]), 200)
    assert markov_bits(periodic, periodic, 2, 4) < 0.2


@pytest.mark.slow
def test_tiny_demo_writes_outputs_and_prints_summary(tmp_path):
    lines = []
    # The default device ("auto"), as `make demo` runs it.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a caller's setting other than the demo's 1 (the suite runs on 1: conftest)
    try:
        result = demo(DemoConfig(out=str(tmp_path / "demo"), steps=2, threads=1), echo=lines.append)
        assert torch.get_num_threads() == 2  # the caller's setting back
    finally:
        torch.set_num_threads(threads)
    text = "\n".join(lines)
    assert "for 2 steps of 16 × 256 bases on 1 CPU thread" in text
    assert "step    2/2" in text  # a progress line from the validation at the last step
    assert "summary: the model scores" in text and "Markov baseline" in text and "uniform 2.000" in text
    assert result["steps"] == 2
    assert 1.5 < result["val_bits_per_base"] < 2.5
    for key in ("checkpoint", "training log", "embeddings", "embedding index", "generated DNA"):
        assert Path(result[key]).exists(), key
    generated = (tmp_path / "demo" / "generated.fa").read_text().splitlines()
    assert generated[0].startswith(">") and len("".join(generated[1:])) == 1000
