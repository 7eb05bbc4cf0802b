"""Padding, packing and the DataLoader collate, against plain per-sequence references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from seqssm.datasets.batching import Collate, Record, pack_sequences, pad_batch, unpack
from seqssm.datasets.labelled import read_labelled_table
from seqssm.errors import InputError
from seqssm.tokenizers import NucleotideTokenizer


def _random_seqs(lengths, vocab=10):
    return [torch.randint(0, vocab, (n,)) for n in lengths]


def _pad_reference(seqs, pad_id, length):
    ids = [[pad_id] * length for _ in seqs]
    mask = [[False] * length for _ in seqs]
    for b, s in enumerate(seqs):
        for t, v in enumerate(s.tolist()):
            ids[b][t] = v
            mask[b][t] = True
    return torch.tensor(ids, dtype=torch.int64), torch.tensor(mask, dtype=torch.bool)


@pytest.mark.parametrize("multiple", [None, 1, 8])
def test_pad_batch_matches_reference(multiple):
    seqs = _random_seqs([5, 1, 13, 0, 7])
    ids, mask = pad_batch(seqs, pad_id=3, pad_to_multiple_of=multiple)
    length = 16 if multiple == 8 else 13
    ref_ids, ref_mask = _pad_reference(seqs, 3, length)
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)


def test_pad_batch_accepts_numpy_and_lists_of_any_int_dtype():
    seqs = [np.array([5, 6, 7], dtype=np.int32), [8, 9], torch.tensor([5], dtype=torch.int16)]
    ids, mask = pad_batch(seqs, pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 0], [5, 0, 0]]
    assert mask.sum(1).tolist() == [3, 2, 1]
    ids, mask = pad_batch([[], [7]], pad_id=0, pad_to_multiple_of=4)
    assert ids.tolist() == [[0, 0, 0, 0], [7, 0, 0, 0]]
    assert mask.tolist() == [[False] * 4, [True, False, False, False]]


def test_pad_batch_bad_inputs():
    with pytest.raises(InputError, match="no sequences"):
        pad_batch([], pad_id=0)
    with pytest.raises(InputError, match="1-D integer"):
        pad_batch([torch.zeros(3, 2, dtype=torch.int64)], pad_id=0)
    with pytest.raises(InputError, match="1-D integer"):
        pad_batch([torch.rand(4)], pad_id=0)
    with pytest.raises(InputError, match="pad_to_multiple_of"):
        pad_batch([[1, 2]], pad_id=0, pad_to_multiple_of=0)


def test_pack_sequences_rows_offsets_and_positions():
    lengths = [5, 3, 8, 1, 0, 6, 2, 7]
    seqs = _random_seqs(lengths)
    packed = pack_sequences(seqs, max_length=9, pad_id=0)
    # Next-fit in input order: [5, 3] [8, 1, 0] [6, 2] [7].
    assert packed.ids.shape == (4, 9)
    assert packed.seq_idx.dtype == torch.int32 and packed.cu_seqlens.dtype == torch.int32
    assert packed.cu_seqlens.tolist() == [0, *np.cumsum(lengths).tolist()]
    assert packed.max_seqlen == 8
    assert packed.attention_mask.sum(1).tolist() == [8, 9, 8, 7]
    flat = packed.ids[packed.attention_mask]
    for s, seq in enumerate(seqs):
        assert torch.equal(flat[packed.cu_seqlens[s] : packed.cu_seqlens[s + 1]], seq)
        where = packed.seq_idx == s
        assert torch.equal(packed.ids[where], seq)
        assert packed.position_ids[where].tolist() == list(range(len(seq)))
    padding = ~packed.attention_mask
    assert (packed.ids[padding] == 0).all() and (packed.seq_idx[padding] == -1).all()


def test_pack_sequences_single_row_without_max_length():
    seqs = _random_seqs([4, 9, 2])
    packed = pack_sequences(seqs)
    assert packed.ids.shape == (1, 15) and packed.attention_mask.all()
    assert torch.equal(packed.ids[0], torch.cat(seqs))
    assert packed.seq_idx[0].tolist() == [0] * 4 + [1] * 9 + [2] * 2


def _scan(x: torch.Tensor, decay: float, reset: torch.Tensor | None = None) -> torch.Tensor:
    """h_t = decay * h_{t-1} + x_t, restarting from h = 0 where ``reset`` is True."""
    h = torch.zeros(())
    out = []
    for t in range(len(x)):
        if reset is not None and reset[t]:
            h = torch.zeros(())
        h = decay * h + x[t]
        out.append(h)
    return torch.stack(out) if out else x.new_zeros(0)


def test_packed_recurrence_with_resets_equals_separate_sequences():
    """The contract a packed model must honour: reset the state where seq_idx changes."""
    seqs = _random_seqs([7, 3, 11, 1, 5])
    packed = pack_sequences(seqs, max_length=12)
    x = packed.ids.float()
    out = torch.zeros_like(x)
    for r in range(x.shape[0]):
        idx = packed.seq_idx[r]
        reset = torch.ones_like(idx, dtype=torch.bool)
        reset[1:] = idx[1:] != idx[:-1]
        out[r] = _scan(x[r], 0.9, reset)
    pieces = unpack(packed, out)
    assert len(pieces) == len(seqs)
    for piece, seq in zip(pieces, seqs, strict=True):
        torch.testing.assert_close(piece, _scan(seq.float(), 0.9))
    # Without the reset the carried state leaks into the next sequence.
    leaky = unpack(packed, torch.stack([_scan(row, 0.9) for row in x]))
    assert not torch.allclose(leaky[1], _scan(seqs[1].float(), 0.9))


def test_pack_sequences_bad_inputs():
    with pytest.raises(InputError, match="more than max_length=4"):
        pack_sequences(_random_seqs([3, 5]), max_length=4)
    with pytest.raises(InputError, match="max_length"):
        pack_sequences(_random_seqs([3]), max_length=0)
    with pytest.raises(InputError, match="no sequences"):
        pack_sequences([])


def test_record_is_a_plain_tuple():
    assert Record("a", "ACGT") == ("a", "ACGT", None)
    assert Record(*("b", "AC", "1")).label == "1"


def test_collate_pads_tokenises_and_indexes_labels():
    tok = NucleotideTokenizer()
    records = [("a", "ACGTN", "pos"), Record("b", "gg", "neg"), ("c", torch.tensor([5, 6, 7]), "pos")]
    batch = Collate(tok, classes=["neg", "pos"], pad_to_multiple_of=4)(records)
    expected, _ = pad_batch([tok.encode("ACGTN"), tok.encode("gg"), [5, 6, 7]], tok.pad_id, 4)
    assert batch["ids"] == ["a", "b", "c"]
    assert torch.equal(batch["input_ids"], expected) and batch["input_ids"].shape == (3, 8)
    assert batch["attention_mask"].sum(1).tolist() == [5, 2, 3]
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == [1, 0, 1]


def test_collate_raw_labels_no_labels_and_packing():
    tok = NucleotideTokenizer()
    raw = Collate(tok)([("a", "AC", "x"), ("b", "G", "y")])
    assert raw["labels"] == ["x", "y"]
    assert "labels" not in Collate(tok)([("a", "AC", None), ("b", "G")])
    packed = Collate(tok, classes=["x", "y"], pack=True, pack_length=4)([("a", "ACG", "y"), ("b", "TT", "x")])
    reference = pack_sequences([tok.encode("ACG"), tok.encode("TT")], 4, pad_id=tok.pad_id)
    assert torch.equal(packed["input_ids"], reference.ids) and packed["input_ids"].shape == (2, 4)
    assert torch.equal(packed["seq_idx"], reference.seq_idx)
    assert torch.equal(packed["position_ids"], reference.position_ids)
    assert packed["cu_seqlens"].tolist() == [0, 3, 5] and packed["labels"].tolist() == [1, 0]


def test_collate_in_a_dataloader_over_a_real_table(shared_data):
    table = read_labelled_table(shared_data / "labelled" / "ecoli_sigma_subtypes.tsv")
    tok = NucleotideTokenizer()
    subset = [table[i] for i in range(6)]
    loader = DataLoader(subset, batch_size=3, collate_fn=Collate(tok, classes=table.classes))
    batches = list(loader)
    assert [b["input_ids"].shape for b in batches] == [(3, 81), (3, 81)]
    assert batches[1]["labels"].tolist() == table.label_indices[3:6].tolist()
    assert torch.equal(batches[0]["input_ids"][2], torch.from_numpy(tok.encode(table.sequences[2])))


def test_collate_errors():
    tok = NucleotideTokenizer()
    with pytest.raises(InputError, match=r"record 'b' has label 'maybe', not among the classes \(no, yes\)"):
        Collate(tok, classes=["no", "yes"])([("a", "AC", "yes"), ("b", "GT", "maybe")])
    with pytest.raises(InputError, match="pack_length given without pack=True"):
        Collate(tok, pack_length=8)
