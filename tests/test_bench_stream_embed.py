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


def test_startup_stages_time_the_real_cli_and_leave_the_pipeline_as_it_was(tmp_path, monkeypatch, capsys):
    """benchmarks/stream_embed_startup.py: every start-up stage is timed around `seqssm embed --stream`, the
    output is the CLI's own, and the wrapped pipeline functions are put back afterwards."""
    import numpy as np
    import torch

    import seqssm.pipelines.stream_embed as se
    from seqssm.config import MambaConfig
    from seqssm.models import MambaLMHeadModel

    monkeypatch.setenv("SEQSSM_PROGRESS", "0")
    path = REPO / "benchmarks" / "stream_embed_startup.py"
    spec = importlib.util.spec_from_file_location("stream_embed_startup", path)
    startup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(startup)
    torch.manual_seed(0)
    MambaLMHeadModel(MambaConfig(d_model=16, n_layer=1, d_state=4, vocab_size=10)).save_pretrained(tmp_path / "ck")
    (tmp_path / "c.fa").write_text(">c\n" + "".join(np.random.default_rng(0).choice(list("ACGT"), 300)) + "\n")
    before = {name: getattr(se, name) for name in ("stream_step", "_run", "load_checked", "stream_embed")}
    result = startup.main(["--json", str(tmp_path / "t.json"), "--", "embed", str(tmp_path / "ck"),
                           str(tmp_path / "c.fa"), "--out", str(tmp_path / "emb"), "--per-position", "--stream",
                           "--chunk-size", "128", "--device", "cpu"])
    assert result["exit_code"] == 0 and np.load(tmp_path / "emb" / "embeddings.npy").shape == (300, 16)
    names = [name for name, _, _ in result["stages"]]
    for stage in ("import torch", "load the model (load_checked)", "open the FASTA (.fai built if missing)",
                  "first chunk's launch (kernels loaded or compiled)", "chunk loop (all chunks, last fsync)"):
        assert names.count(stage) == 1, names
    assert result["loop"]["positions"] == 300 and len(result["loop"]["chunks"]) == 3
    assert "| load the model (load_checked) |" in capsys.readouterr().out
    assert json.loads((tmp_path / "t.json").read_text())["exit_code"] == 0
    assert {name: getattr(se, name) for name in before} == before
