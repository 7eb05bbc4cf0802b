"""Packed sequences (seq_idx / cu_seqlens): every sequence comes out as if run alone, for each backbone kind,
gradients included; built by datasets/batching.py's packer."""

from __future__ import annotations

import pytest
import torch

from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel

VOCAB = 10


def _model(kind: str) -> MambaLMHeadModel:
    torch.manual_seed(0)
    cfg = MambaConfig(d_model=16, n_layer=2, vocab_size=VOCAB, d_state=4, bidirectional=kind == "bi",
                      rc_equivariant=kind == "rc")
    model = MambaLMHeadModel(cfg, impl="ref")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("kind", ["causal", "bi", "rc"])
def test_packed_rows_equal_each_sequence_alone(kind):
    model = _model(kind)
    lengths = [[5, 1, 7], [9, 3]]  # row 0: three sequences; row 1: two and two positions of padding
    seqs = [[torch.randint(5, 9, (n,)) for n in row] for row in lengths]
    ids = torch.zeros(2, 13, dtype=torch.long)
    seq_idx = torch.full((2, 13), -1)
    for r, row in enumerate(seqs):
        col = 0
        for i, s in enumerate(row):
            ids[r, col:col + len(s)] = s
            seq_idx[r, col:col + len(s)] = i
            col += len(s)
    packed = model(ids, seq_idx=seq_idx)
    alone = [[model(s[None])[0] for s in row] for row in seqs]
    for r, row in enumerate(alone):
        expected = torch.cat(row)
        torch.testing.assert_close(packed[r, : len(expected)], expected, rtol=1e-5, atol=1e-5)
        assert (packed[r, len(expected):] == 0).all()
    # Gradients: the packed loss's gradient equals the sum over the sequences run alone.
    w = torch.randn_like(packed) * (seq_idx >= 0)[..., None]
    g_packed = torch.autograd.grad((packed * w).sum(), model.backbone.embedding.weight)[0]
    total = 0
    for r, row in enumerate(alone):
        col = 0
        for out in row:
            total = total + (out * w[r, col:col + len(out)]).sum()
            col += len(out)
    g_alone = torch.autograd.grad(total, model.backbone.embedding.weight)[0]
    torch.testing.assert_close(g_packed, g_alone, rtol=1e-5, atol=1e-6)


def test_cu_seqlens_equals_seq_idx_and_batching_packer():
    from seqssm.datasets.batching import pack_sequences

    model = _model("causal")
    seqs = [torch.randint(5, 9, (n,)) for n in (4, 6, 2)]
    flat = torch.cat(seqs)[None]
    cu = torch.tensor([0, 4, 10, 12], dtype=torch.int32)
    by_cu = model(flat, cu_seqlens=cu)
    alone = torch.cat([model(s[None])[0] for s in seqs])
    torch.testing.assert_close(by_cu[0], alone, rtol=1e-5, atol=1e-5)
    packed = pack_sequences([s.tolist() for s in seqs], max_length=8)
    out = model(packed.ids, seq_idx=packed.seq_idx)
    torch.testing.assert_close(out[packed.attention_mask], alone, rtol=1e-5, atol=1e-5)


def test_packed_input_errors():
    model = _model("causal")
    ids = torch.randint(5, 9, (2, 6))
    with pytest.raises(InputError, match="one row"):
        model(ids, cu_seqlens=torch.tensor([0, 3, 6]))
    with pytest.raises(InputError, match="non-decreasing"):
        model(ids[:1], cu_seqlens=torch.tensor([0, 5, 3]))
    with pytest.raises(InputError, match="all -1"):
        model(ids, seq_idx=torch.full((2, 6), -1))
    with pytest.raises(InputError, match="attention_mask"):
        model(ids, attention_mask=torch.ones_like(ids), seq_idx=torch.zeros_like(ids))
