"""`seqssm demo`: a step budget (not a wall clock), progress lines, an honest summary, the same outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seqssm.data import lambda_phage_fasta
from seqssm.pipelines import demo as demo_module
from seqssm.pipelines.configs_sequence import DemoConfig
from seqssm.pipelines.demo import demo, markov_bits, split_genome


def test_defaults_are_what_the_docstring_says():
    cfg = DemoConfig()
    doc = " ".join(demo.__doc__.split())
    assert f"for ``cfg.steps`` steps (default {cfg.steps})" in doc
    assert cfg.steps == 400 and cfg.minutes == 20.0
    assert (demo_module.D_MODEL, demo_module.N_LAYER, demo_module.WINDOW, demo_module.BATCH, demo_module.LR) \
        == (64, 2, 128, 32, 5e-3)
    assert f"d_model {demo_module.D_MODEL}, {demo_module.N_LAYER} layers" in doc
    assert f"{demo_module.BATCH} windows of {demo_module.WINDOW} bases" in doc
    assert "learning rate of 5e-3" in doc


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
    result = demo(DemoConfig(out=str(tmp_path / "demo"), steps=2), echo=lines.append)
    text = "\n".join(lines)
    assert "for 2 steps of 32 × 128 bases" in text
    assert "step    2/2" in text  # a progress line from the validation at the last step
    assert "summary: the model scores" in text and "Markov baseline" in text and "uniform 2.000" in text
    assert result["steps"] == 2
    assert 1.5 < result["val_bits_per_base"] < 2.5
    for key in ("checkpoint", "training log", "embeddings", "embedding index", "generated DNA"):
        assert Path(result[key]).exists(), key
    generated = (tmp_path / "demo" / "generated.fa").read_text().splitlines()
    assert generated[0].startswith(">") and len("".join(generated[1:])) == 1000
