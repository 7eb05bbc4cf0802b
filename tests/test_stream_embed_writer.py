"""stream_embed's writer thread, writeback hints and default chunk size (the H200 speed work of issue 20)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import seqssm.pipelines.stream_embed as se
from seqssm.config import MambaConfig
from seqssm.models import MambaLMHeadModel
from seqssm.pipelines.stream_embed import StreamEmbedConfig, StreamTimings, default_chunk_size, stream_embed
from seqssm.tokenizers import get_tokenizer


@pytest.fixture(scope="module")
def model_and_fasta(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("writer")
    model = MambaLMHeadModel(MambaConfig(d_model=16, n_layer=2, vocab_size=10, d_state=4), impl="chunked")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path / "ckpt")
    bases = "".join(np.random.default_rng(5).choice(list("ACGT"), 1001))
    (path / "c.fa").write_text(">c\n" + bases + "\n")
    ids = torch.as_tensor(get_tokenizer("nucleotide").encode(bases))[None]
    with torch.no_grad():
        expected = model.eval().backbone(ids)[0].numpy()
    return str(path / "ckpt"), str(path / "c.fa"), expected


def test_default_chunk_size_is_set_by_the_device(model_and_fasta, tmp_path):
    ckpt, fasta, _ = model_and_fasta
    assert default_chunk_size(torch.device("cpu")) == 1 << 16
    assert default_chunk_size(torch.device("cuda")) == 1 << 18
    assert StreamEmbedConfig(checkpoint=ckpt, source=fasta, out=str(tmp_path / "x")).chunk_size is None
    stream_embed(StreamEmbedConfig(checkpoint=ckpt, source=fasta, out=str(tmp_path / "x"), device="cpu"))
    assert json.loads((tmp_path / "x" / "stream.json").read_text())["chunk_size"] == 1 << 16


def test_writer_thread_and_writeback_hints_keep_every_row(model_and_fasta, tmp_path, monkeypatch):
    """Many chunks through the three slots and the writer thread, a writeback hint every few rows: each row
    is the one-pass forward's, the file the same bytes as with no hints, and the hints did happen."""
    ckpt, fasta, expected = model_and_fasta
    common = dict(checkpoint=ckpt, source=fasta, chunk_size=37, device="cpu")  # 28 chunks, the last padded
    plain = stream_embed(StreamEmbedConfig(out=str(tmp_path / "plain"), **common))
    hints, fadvise = [], os.posix_fadvise

    def spy(fd, offset, length, advice):
        hints.append((offset, length, advice))
        fadvise(fd, offset, length, advice)

    monkeypatch.setattr(se, "WRITEBACK_BYTES", 200 * 16 * 2)  # every ~200 rows of 16 float16
    monkeypatch.setattr(os, "posix_fadvise", spy)
    timings = StreamTimings()
    hinted = stream_embed(StreamEmbedConfig(out=str(tmp_path / "hinted"), **common), timings=timings)
    assert len(hints) == 4 and all(a == os.POSIX_FADV_DONTNEED for *_, a in hints)
    assert sum(n for _, n, _ in hints) >= 4 * 200 * 32  # contiguous ranges of written rows, none skipped
    assert hinted.embeddings.read_bytes() == plain.embeddings.read_bytes()
    assert len(timings.chunks) == 28 and timings.chunks == sorted(timings.chunks) and timings.sync > 0
    np.testing.assert_allclose(np.load(hinted.embeddings).astype(np.float32), expected, rtol=2e-3, atol=2e-3)


def test_a_failed_write_stops_the_run_resumably(model_and_fasta, tmp_path, monkeypatch):
    """An OSError in the writer thread (a full disk) surfaces in the caller; the files stay to resume from,
    and the resumed run writes the same bytes as an uninterrupted one."""
    ckpt, fasta, _ = model_and_fasta
    common = dict(checkpoint=ckpt, source=fasta, chunk_size=50, device="cpu")
    whole = stream_embed(StreamEmbedConfig(out=str(tmp_path / "whole"), **common))
    write, calls = se._Rows.write, []

    def failing(self, start, rows):
        calls.append(start)
        if len(calls) == 9:
            raise OSError(28, "No space left on device")
        write(self, start, rows)

    monkeypatch.setattr(se._Rows, "write", failing)
    out = tmp_path / "broken"
    with pytest.raises(OSError, match="No space"):
        stream_embed(StreamEmbedConfig(out=str(out), **common), save_every_s=0)
    assert (out / "stream_state.safetensors").exists() and not (out / "index.tsv").exists()
    monkeypatch.setattr(se._Rows, "write", write)
    resumed = stream_embed(StreamEmbedConfig(out=str(out), **common))
    assert resumed.resumed_from > 0
    assert resumed.embeddings.read_bytes() == whole.embeddings.read_bytes()
