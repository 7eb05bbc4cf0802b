"""Pooled embeddings: padding never leaks in, and RC-equivariant checkpoints embed both strands alike."""

from __future__ import annotations

import numpy as np
import pytest

from seqssm.config import MambaConfig
from seqssm.models import MambaLMHeadModel
from seqssm.pipelines.embed import EmbedConfig, embed
from seqssm.tokenizers import NucleotideTokenizer


@pytest.mark.parametrize("rc", [False, True])
def test_pooled_embeddings_per_record(tmp_path, rc):
    model = MambaLMHeadModel(MambaConfig(d_model=16, n_layer=2, vocab_size=10, d_state=4, rc_equivariant=rc))
    model.save_pretrained(tmp_path / "ckpt")
    rng = np.random.default_rng(1)
    seq = "".join(rng.choice(list("ACGT"), 77))
    rc_seq = NucleotideTokenizer().reverse_complement(seq)
    (tmp_path / "x.fa").write_text(f">a\n{seq}\n>b\n{rc_seq}\n>c\n{seq[:31]}\n")
    result = embed(EmbedConfig(checkpoint=str(tmp_path / "ckpt"), fasta=str(tmp_path / "x.fa"),
                               out=str(tmp_path / "e"), batch_size=3, device="cpu"))
    batched = np.load(result.embeddings)
    assert batched.shape == (3, 8 if rc else 16)
    # the short record, padded in the batch, equals itself embedded alone
    (tmp_path / "c.fa").write_text(f">c\n{seq[:31]}\n")
    alone = embed(EmbedConfig(checkpoint=str(tmp_path / "ckpt"), fasta=str(tmp_path / "c.fa"),
                              out=str(tmp_path / "c"), device="cpu"))
    np.testing.assert_allclose(batched[2], np.load(alone.embeddings)[0], atol=1e-5)
    strand_gap = np.abs(batched[0] - batched[1]).max()
    if rc:
        assert strand_gap < 1e-5
    else:
        assert strand_gap > 1e-3
