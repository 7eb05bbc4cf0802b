"""Labelled tables and FASTA, and seeded stratified splits, on the real E. coli promoter sets."""

from __future__ import annotations

import csv
import gzip
import random
from collections import Counter

import numpy as np
import pytest

from seqssm.datasets.labelled import read_labelled_table
from seqssm.datasets.tables import read_label_map, split_indices
from seqssm.errors import InputError


@pytest.fixture
def promoters(shared_data):
    return shared_data / "labelled" / "ecoli_promoters.tsv"


@pytest.fixture
def sigma(shared_data):
    return read_labelled_table(shared_data / "labelled" / "ecoli_sigma_subtypes.tsv")


def test_promoter_table_matches_csv_reading(promoters):
    data = read_labelled_table(promoters)
    with open(promoters, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(data) == len(rows) == 5720
    assert data.classes == ["0", "1"]
    assert Counter(data.labels) == {"0": 2860, "1": 2860}
    assert data.sequences == [r["sequence"] for r in rows]
    assert data.ids == [r["id"] for r in rows]
    assert {len(s) for s in data.sequences} == {81}
    record = data[7]
    assert record == (rows[7]["id"], rows[7]["sequence"], rows[7]["label"])
    assert data.label_indices.dtype == np.int64
    assert data.label_indices.tolist() == [data.classes.index(label) for label in data.labels]


def test_sigma_subtypes_classes_sorted(sigma):
    assert len(sigma) == 2860
    assert sigma.classes == ["sigma24", "sigma28", "sigma32", "sigma38", "sigma54", "sigma70"]
    assert Counter(sigma.labels)["sigma70"] == 1694


def test_csv_sniffed_txt_gzip_and_custom_columns(tmp_path):
    (tmp_path / "a.csv").write_text("name,seq,cls\nx,ACGT,10\ny,acgn,2\n")
    columns = dict(sequence_column="seq", label_column="cls", id_column="name")
    data = read_labelled_table(tmp_path / "a.csv", **columns)
    assert (data.ids, data.sequences, data.labels) == (["x", "y"], ["ACGT", "acgn"], ["10", "2"])
    assert data.classes == ["2", "10"]
    (tmp_path / "b.txt").write_text("sequence;label\nAC;yes\nGT;no\n")
    data = read_labelled_table(tmp_path / "b.txt")
    assert data.sequences == ["AC", "GT"] and data.labels == ["yes", "no"]
    assert data.ids == ["b.txt:2", "b.txt:3"]
    with gzip.open(tmp_path / "c.tsv.gz", "wt") as f:
        f.write("sequence\tlabel\tid\nTTGA\t1\tr1\n\nCCA\t0\tr2\n")
    data = read_labelled_table(tmp_path / "c.tsv.gz")
    assert data.ids == ["r1", "r2"] and data.labels == ["1", "0"]


def test_labelled_fasta_header_forms(tmp_path):
    fa = tmp_path / "l.fa"
    fa.write_text(">s1 label=1\nACGT\nAC\n>s2|0\nGGG\n>s3|x note=a label=1 other\nTT\n")
    data = read_labelled_table(fa)
    assert data.ids == ["s1", "s2", "s3|x"]
    assert data.sequences == ["ACGTAC", "GGG", "TT"]
    assert data.labels == ["1", "0", "1"]
    with gzip.open(tmp_path / "k.fasta.gz", "wt") as f:
        f.write(">a class=up\nAC\n>b class=down\nGT\n")
    data = read_labelled_table(tmp_path / "k.fasta.gz", label_column="class")
    assert data.labels == ["up", "down"] and data.classes == ["down", "up"]
    # A file that starts with '>' is FASTA whatever its name.
    (tmp_path / "seqs.txt").write_text(">z|7\nAAA\n")
    assert read_labelled_table(tmp_path / "seqs.txt").labels == ["7"]


def test_table_errors(tmp_path, promoters):
    with pytest.raises(InputError, match=r"no label column 'class' \(columns: sequence, label, id\)"):
        read_labelled_table(promoters, label_column="class")
    bad = tmp_path / "bad.tsv"
    bad.write_text("sequence\tlabel\nACGT\t1\nACGT\n")
    with pytest.raises(InputError, match=r"bad\.tsv:3: 1 fields, the header has 2"):
        read_labelled_table(bad)
    bad.write_text("sequence\tlabel\nACGT\t1\nAC-GT\t0\n")
    with pytest.raises(InputError, match=r"bad\.tsv:3: sequence 'AC-GT'"):
        read_labelled_table(bad)
    bad.write_text("sequence\tlabel\nACGT\t \n")
    with pytest.raises(InputError, match=r"bad\.tsv:2: empty label"):
        read_labelled_table(bad)
    bad.write_text("sequence\tlabel\n")
    with pytest.raises(InputError, match="no labelled sequences"):
        read_labelled_table(bad)
    with pytest.raises(InputError, match="does not exist"):
        read_labelled_table(tmp_path / "missing.tsv")
    fa = tmp_path / "nolabel.fa"
    fa.write_text(">s1 label=1\nAC\n>s2 just a note\nGT\n")
    with pytest.raises(InputError, match=r"record 2: header 's2 just a note' carries no label"):
        read_labelled_table(fa)


def test_label_map_and_its_errors(tmp_path):
    (tmp_path / "m.csv").write_text("name,label\npeak1,open\npeak2,closed\n")
    assert read_label_map(tmp_path / "m.csv") == {"peak1": "open", "peak2": "closed"}
    with pytest.raises(InputError, match=r"no key column 'region' \(columns: name, label\)"):
        read_label_map(tmp_path / "m.csv", key_column="region")


def test_split_sizes_disjoint_and_covering():
    parts = split_indices(101, (0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in parts] == [81, 10, 10]
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(101))
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
    train, test = split_indices(10, (0.7, 0.3), seed=0)
    assert (len(train), len(test)) == (7, 3)
    train, val, test = split_indices(10, (0.9, 0.1, 0.0))
    assert (len(train), len(val), len(test)) == (9, 1, 0)


def test_split_is_seeded_and_independent_of_call_order_and_global_state(sigma):
    first = split_indices(len(sigma), seed=0, stratify=sigma.labels)
    other = split_indices(len(sigma), seed=1, stratify=sigma.labels)
    np.random.seed(123)
    random.seed(5)
    np.random.rand(10)
    again = split_indices(len(sigma), seed=0, stratify=sigma.labels)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_stratified_split_keeps_class_proportions(sigma):
    labels = sigma.label_indices
    overall = np.bincount(labels) / len(labels)
    parts = split_indices(len(sigma), seed=0, stratify=sigma.labels)
    for part, fraction in zip(parts, (0.8, 0.1, 0.1), strict=True):
        counts = np.bincount(labels[part], minlength=len(sigma.classes))
        assert np.all(np.abs(counts - overall * fraction * len(labels)) <= 2)


def test_split_falls_back_when_a_class_is_too_rare():
    labels = ["a"] * 19 + ["b"]
    with pytest.warns(UserWarning, match="cannot stratify"):
        parts = split_indices(20, (0.8, 0.1, 0.1), seed=0, stratify=labels)
    assert sorted(np.concatenate(parts).tolist()) == list(range(20))


def test_split_errors():
    with pytest.raises(InputError, match="summing to 1"):
        split_indices(10, (0.8, 0.1))
    with pytest.raises(InputError, match="summing to 1"):
        split_indices(10, (1.2, -0.2))
    with pytest.raises(InputError, match="one label per item"):
        split_indices(10, stratify=[0, 1])
    with pytest.raises(InputError, match="seed"):
        split_indices(10, seed=-1)
    with pytest.raises(InputError, match="at least one item"):
        split_indices(0)
