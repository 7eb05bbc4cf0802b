"""`pretrain --pack`: records packed into rows with seq_idx (datasets/packed.py), losses that equal each
sequence run alone (causal and bidirectional), end to end on a multi-record FASTA and a BAM of reads, and the
combinations it refuses."""

from __future__ import annotations

import json
import random
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_harness import run_cli

from seqssm.config import MambaConfig
from seqssm.datasets.packed import PackedRecords, read_records, split_records
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel, load_model
from seqssm.pipelines.objectives import IGNORE, causal_lm_loss, mask_tokens, masked_lm_loss
from seqssm.tokenizers import get_tokenizer

TOK = get_tokenizer("nucleotide")
LENGTHS = [5, 30, 64, 200, 17, 90, 3, 150, 40, 77, 12, 300, 1, 66]
TINY = ["--window", "32", "--batch-size", "3", "--steps", "3", "--val-every", "3", "--val-windows", "4",
        "--d-model", "16", "--n-layer", "1", "--d-state", "4", "--warmup-steps", "1", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("SEQSSM_PROGRESS", "0")


@pytest.fixture
def fasta(tmp_path):
    """Records of 1 to 300 bases (shorter and longer than the rows), N runs in the longer ones."""
    rng = random.Random(0)
    path = tmp_path / "records.fa"
    with open(path, "w") as f:
        for i, n in enumerate(LENGTHS):
            seq = "".join(rng.choice("ACGT") for _ in range(n))
            seq = seq[:n // 2] + "NNN" + seq[n // 2 + 3:] if n >= 10 else seq
            f.write(f">rec{i} some description\n{seq}\n")
    return path


def _bam(path, lengths):
    """Unaligned reads of the given lengths (pysam writes the BAM)."""
    import pysam

    rng = random.Random(1)
    with pysam.AlignmentFile(str(path), "wb", header={"HD": {"VN": "1.6"}}) as out:
        for i, n in enumerate(lengths):
            read = pysam.AlignedSegment()
            read.query_name, read.flag = f"read{i}", 4
            read.query_sequence = "".join(rng.choice("ACGT") for _ in range(n))
            read.query_qualities = pysam.qualitystring_to_array("I" * n)
            out.write(read)
    return path


def _model(bidirectional: bool) -> MambaLMHeadModel:
    torch.manual_seed(0)
    model = MambaLMHeadModel(MambaConfig(d_model=16, n_layer=2, vocab_size=TOK.vocab_size, d_state=4,
                                         bidirectional=bidirectional), impl="ref")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # away from the init, so every sequence's outputs differ
    return model


def _runs(seq_idx_row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each run of one value >= 0 in a row."""
    runs, start = [], 0
    values = seq_idx_row.tolist()
    for t in range(1, len(values) + 1):
        if t == len(values) or values[t] != values[t - 1]:
            if values[start] >= 0:
                runs.append((start, t))
            start = t
    return runs


def _rows(fasta, row_length, rows=3):
    records = read_records(fasta, TOK)
    ds = PackedRecords(records, list(range(len(records.names))), row_length, TOK, num_rows=40, seed=3,
                       min_length=2)
    shared = [ds[i] for i in range(len(ds)) if len(_runs(ds[i][1])) >= 2][:rows]  # rows of several sequences
    ids, seq_idx = (torch.stack(t) for t in zip(*shared, strict=True))
    assert len(ids) == rows and (seq_idx < 0).any(), "rows of several sequences and some padding to mask"
    return ids, seq_idx


def _grads(model, loss) -> list[torch.Tensor]:
    return torch.autograd.grad(loss, [p for p in model.parameters()], allow_unused=True)


def _assert_same(model, packed_loss, alone_loss):
    torch.testing.assert_close(packed_loss, alone_loss, rtol=1e-5, atol=1e-6)
    for name, a, b in zip([n for n, _ in model.named_parameters()], _grads(model, packed_loss),
                          _grads(model, alone_loss), strict=True):
        if a is None or b is None:
            assert a is None and b is None, name
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_packed_causal_loss_and_gradients_equal_each_sequence_alone(fasta):
    model = _model(bidirectional=False)
    ids, seq_idx = _rows(fasta, 41)
    packed = causal_lm_loss(model, ids, seq_idx=seq_idx)
    total, count = 0.0, 0
    for r in range(ids.shape[0]):
        for start, end in _runs(seq_idx[r]):
            seq = ids[r, start:end]
            logits = model(seq[None, :-1])[0]
            total = total + F.cross_entropy(logits, seq[1:], reduction="sum")
            count += len(seq) - 1
    _assert_same(model, packed, total / count)
    # Without seq_idx the rows leak context (and predict across boundaries): the comparison above can fail.
    assert abs(causal_lm_loss(model, ids).item() - packed.item()) > 1e-3


def test_packed_masked_loss_and_gradients_equal_each_sequence_alone(fasta):
    model = _model(bidirectional=True)
    ids, seq_idx = _rows(fasta, 40)
    inputs, labels = mask_tokens(ids, mask_id=TOK.mask_id, vocab_ids=torch.arange(5, 10), mask_prob=0.3,
                                 special=seq_idx < 0, generator=torch.Generator().manual_seed(0))
    assert (labels[seq_idx < 0] == IGNORE).all() and (inputs[seq_idx < 0] == TOK.pad_id).all()
    packed = masked_lm_loss(model, inputs, labels, seq_idx=seq_idx)
    total, count = 0.0, 0
    for r in range(ids.shape[0]):
        for start, end in _runs(seq_idx[r]):
            logits = model(inputs[r, start:end][None])[0]  # bidirectional: sees the whole sequence, both ways
            total = total + F.cross_entropy(logits, labels[r, start:end], ignore_index=IGNORE, reduction="sum")
            count += int((labels[r, start:end] != IGNORE).sum())
    _assert_same(model, packed, total / count)
    assert abs(masked_lm_loss(model, inputs, labels).item() - packed.item()) > 1e-3  # the leak is visible


def test_rows_are_record_pieces_and_the_split_holds_out_whole_records(fasta):
    records = read_records(fasta, TOK)
    assert records.names[0] == "rec0" and [len(c) for c in records.codes] == LENGTHS
    train, val = split_records(records, 0.1)
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(len(LENGTHS))) and val
    assert split_records(records, 0.1) == (train, val)  # no seed: every run validates on the same records
    R = 40
    ds = PackedRecords(records, train, R, TOK, num_rows=60, seed=5, min_length=2, both_strands=False)
    again = PackedRecords(records, train, R, TOK, num_rows=60, seed=5, min_length=2, both_strands=False)
    texts = {"".join("ACGTN"[c - 5] for c in codes) for codes in (records.codes[i] for i in train)}
    real = 0
    for i in range(len(ds)):
        ids, seq_idx = ds[i]
        assert torch.equal(ids, again[i][0]) and torch.equal(seq_idx, again[i][1])  # a function of (seed, i)
        valid = seq_idx >= 0
        n = int(valid.sum())
        assert valid[:n].all() and not valid[n:].any() and (ids[n:] == TOK.pad_id).all()  # padding at the end
        for start, end in _runs(seq_idx):
            piece = "".join("ACGTN"[c - 5] for c in ids[start:end].tolist())
            assert 2 <= len(piece) <= R and any(piece in t for t in texts), piece  # a piece of a train record
        real += n
    assert ds.stats()["efficiency"] == pytest.approx(real / (len(ds) * R), abs=1e-4)
    assert 0.5 < ds.efficiency() <= 1
    # One epoch's pieces tile every train record exactly once.
    lay = ds._layouts[0]
    for r in train:
        mine = sorted((int(s), int(s + k)) for rec, s, k in zip(lay.record, lay.start, lay.length, strict=True)
                      if rec == r)
        if LENGTHS[r] >= 2:  # a cut can leave a first or last piece of 1 base, which predicts nothing: left out
            assert mine[0][0] <= 1 and mine[-1][1] >= LENGTHS[r] - 1
            assert all(a[1] == b[0] for a, b in zip(mine, mine[1:], strict=False))
    assert ds._layouts[1].start.tolist() != lay.start.tolist()  # each epoch cuts at new places
    with pytest.raises(InputError, match="1 record"):
        split_records(type(records)(records.path, records.names[:1], records.codes[:1]), 0.1)




@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_pretrain_pack_end_to_end_on_a_multi_record_fasta(fasta, tmp_path, capsys, monkeypatch, objective):
    extra = ["--objective", "mlm", "--bidirectional"] if objective == "mlm" else []
    code, err = run_cli(["pretrain", fasta, "--out", tmp_path / "run", "--pack", *TINY, *extra], capsys, monkeypatch)
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    packing = record["packing"]
    assert record["config"]["pack"] is True and packing["rows"] == 9 and packing["row_length"] == 32 + (
        objective == "clm")
    assert 0.5 < packing["efficiency"] <= 1 and 0 < packing["forward_efficiency"] <= 1
    assert packing["sequences"] > packing["rows"]  # short records share rows
    assert np.isfinite(record["result"]["val_bits_per_token"])
    assert load_model(tmp_path / "run" / "checkpoint").config.bidirectional == (objective == "mlm")
    assert record["warnings"] and "--steps" in record["warnings"][0]


def test_pretrain_pack_end_to_end_on_a_bam_of_reads(tmp_path, capsys, monkeypatch):
    bam = _bam(tmp_path / "reads.bam", [random.Random(i).randint(20, 60) for i in range(40)])
    code, err = run_cli(["pretrain", bam, "--out", tmp_path / "run", "--pack", *TINY], capsys, monkeypatch)
    assert code == 0, err
    packing = json.loads((tmp_path / "run" / "run.json").read_text())["packing"]
    assert packing["records"] < 40 and packing["sequences_per_row"] > 1 and packing["efficiency"] > 0.8


@pytest.mark.parametrize("args, message", [
    (["--modality", "bytes"], "--pack packs DNA records"),
    (["--length-warmup-steps", "2", "--min-window", "16"], "--length-warmup-steps"),
    (["--max-tokens-per-micro-batch", "16"], "--max-tokens-per-micro-batch"),
    (["--moe-every", "1"], "--moe-every"),
    ("one record", "holds 1 record"),
    ("cram", "CRAM"),
])
def test_bad_pack_combinations_exit_2(fasta, tmp_path, capsys, monkeypatch, args, message):
    data = fasta
    if args == "one record":
        data, args = tmp_path / "one.fa", []
        data.write_text(">only\n" + "ACGT" * 50 + "\n")
    elif args == "cram":
        data, args = tmp_path / "reads.cram", []
        data.write_bytes(b"CRAM\x03\x00" + b"\x00" * 40)
    code, err = run_cli(["pretrain", data, "--out", tmp_path / "run", "--pack", *TINY, *args], capsys, monkeypatch)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_pretrain_pack_stopped_and_resumed_ends_where_an_uninterrupted_run_ends(fasta, tmp_path, monkeypatch):
    """Row i is a function of (seed, i), so a resumed run trains on the rows it has not seen (the bit-for-bit
    subprocess version for plain windows is tests/test_resume.py)."""
    from safetensors.torch import load_file

    from seqssm.pipelines import pretrain as job
    from seqssm.pipelines.checkpointing import TrainingInterrupted

    def run(name, **kw):
        return job.pretrain(job.PretrainConfig(
            data=str(fasta), out=str(tmp_path / name), pack=True, objective="mlm", bidirectional=True, window=32,
            batch_size=3, steps=4, val_every=2, val_windows=4, d_model=16, n_layer=1, d_state=4, warmup_steps=1,
            lr=1e-2, device="cpu", impl="chunked", **kw))

    class TermAtStep2(job.StopSignals):  # SIGTERM "arrives" during step 2: the state is saved after it
        checks = 0

        @property
        def signum(self):
            TermAtStep2.checks += 1
            return signal.SIGTERM if TermAtStep2.checks >= 2 else None

        @signum.setter
        def signum(self, value):
            pass

    run("reference")
    monkeypatch.setattr(job, "StopSignals", TermAtStep2)
    with pytest.raises(TrainingInterrupted):
        run("resumed")
    assert json.loads((tmp_path / "resumed" / "run.json").read_text())["interrupted"]["step"] == 2
    monkeypatch.undo()
    run("resumed", resume=True)
    a, b = (load_file(tmp_path / name / "checkpoint" / "model.safetensors") for name in ("reference", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "resumed" / "run.json").read_text())["packing"]["rows"] == 12


def test_real_genome_pieces_and_reads_pack_densely(shared_data):
    """The shared C. elegans FASTA (1 Mb + six 5 kb records) and the CHM1 Illumina reads (a BAM, no index)."""
    genome = read_records(shared_data / "dna" / "ce_chrI_1mb.fa", TOK)
    train, val = split_records(genome, 0.1)
    assert len(genome.names) == 7 and len(train) == 1 and len(val) == 6  # the 1 Mb record does not fit in 10%
    rows = PackedRecords(genome, train, 1025, TOK, num_rows=64, min_length=2)
    assert rows.efficiency() > 0.99  # row-length pieces of one long record
    reads = read_records(shared_data / "dna" / "chm1_reads.bam", TOK)
    train, val = split_records(reads, 0.1)
    assert len(reads.names) > 40_000 and 0.09 < len(val) / len(reads.names) < 0.11
    stats = PackedRecords(reads, train, 1025, TOK, num_rows=256, min_length=2).stats(batch_size=16)
    assert stats["sequences_per_row"] >= 10 and stats["efficiency"] > 0.97 and stats["forward_efficiency"] > 0.9
