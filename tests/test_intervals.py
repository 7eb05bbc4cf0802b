"""BED parsing and interval sequences against pysam on the real C. elegans FASTA."""

from __future__ import annotations

import gzip

import pysam
import pytest
import torch
from torch.utils.data import DataLoader

from seqssm.datasets.batching import Collate
from seqssm.datasets.fasta import FastaFile
from seqssm.datasets.intervals import Interval, IntervalDataset, read_bed
from seqssm.errors import InputError
from seqssm.tokenizers import NucleotideTokenizer

_COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")


def _revcomp(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


@pytest.fixture(scope="module")
def genome(shared_data):
    return FastaFile(shared_data / "dna" / "ce_chrI_1mb.fa")


@pytest.fixture(scope="module")
def ref(shared_data):
    with pysam.FastaFile(str(shared_data / "dna" / "ce_chrI_1mb.fa")) as fa:
        yield fa


def _bed(tmp_path, text, name="x.bed"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_bed_columns_headers_and_separators(tmp_path):
    path = _bed(
        tmp_path,
        "# comment\ntrack name=x\nbrowser position chrI\n\n"
        "CHROMOSOME_I\t10\t20\n"
        "CHROMOSOME_I\t30\t41\tpeak2\n"
        "CHROMOSOME_II\t0\t5\tpeak3\t7.5\t-\n"
        "CHROMOSOME_V 100 100 . . +\n"
        "CHROMOSOME_X\t1\t2\tp\t.\t.\textra\tcols\n",
    )
    ivs = list(read_bed(path))
    assert [(i.contig, i.start, i.end, i.name, i.score, i.strand) for i in ivs] == [
        ("CHROMOSOME_I", 10, 20, None, None, "."),
        ("CHROMOSOME_I", 30, 41, "peak2", None, "."),
        ("CHROMOSOME_II", 0, 5, "peak3", 7.5, "-"),
        ("CHROMOSOME_V", 100, 100, None, None, "+"),
        ("CHROMOSOME_X", 1, 2, "p", None, "."),
    ]
    assert [i.source for i in ivs] == [f"{path}:{n}" for n in (5, 6, 7, 8, 9)]
    assert all(i.label is None for i in ivs)
    with gzip.open(tmp_path / "y.bed.gz", "wt") as f:
        f.write("CHROMOSOME_I\t1\t3\n")
    assert [(i.start, i.end) for i in read_bed(tmp_path / "y.bed.gz")] == [(1, 3)]


def test_read_bed_labels_by_column_and_by_table(tmp_path):
    path = _bed(tmp_path, "CHROMOSOME_I\t0\t5\ta\t0\t+\topen\nCHROMOSOME_I\t5\t9\tb\t0\t-\tclosed\n")
    assert [i.label for i in read_bed(path, label_column=6)] == ["open", "closed"]
    table = tmp_path / "labels.tsv"
    table.write_text("name\tlabel\nb\t1\na\t0\n")
    assert [i.label for i in read_bed(path, label_column=table)] == ["0", "1"]


def test_read_bed_streams_up_to_a_bad_line(tmp_path):
    path = _bed(tmp_path, "CHROMOSOME_I\t0\t5\nCHROMOSOME_I\t9\t3\n")
    it = read_bed(path)
    assert next(it).end == 5
    with pytest.raises(InputError, match=rf"{path}:2: end 3 < start 9"):
        next(it)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("CHROMOSOME_I\t5", r":1: 2 column\(s\); BED needs at least contig, start, end"),
        ("CHROMOSOME_I\t5\tten", r":1: end 'ten' is not an integer"),
        ("CHROMOSOME_I\t1.5\t10", r":1: start '1.5' is not an integer"),
        ("CHROMOSOME_I\t-4\t10", r":1: negative start -4"),
        ("CHROMOSOME_I\t10\t4", r":1: end 4 < start 10"),
        ("CHROMOSOME_I\t1\t4\tn\t0\tx", r":1: strand 'x'"),
        ("CHROMOSOME_I\t1\t4\tn\thigh\t+", r":1: score 'high' is not a number"),
    ],
)
def test_read_bed_bad_lines(tmp_path, line, message):
    path = _bed(tmp_path, line + "\n")
    with pytest.raises(InputError, match=message):
        list(read_bed(path))


def test_read_bed_bad_labels_and_arguments(tmp_path):
    path = _bed(tmp_path, "CHROMOSOME_I\t0\t5\ta\t0\t+\topen\nCHROMOSOME_I\t5\t9\tb\t0\t-\n")
    with pytest.raises(InputError, match=r"x\.bed:2: 6 columns, no label column 6"):
        list(read_bed(path, label_column=6))
    table = tmp_path / "labels.tsv"
    table.write_text("name\tlabel\na\t0\n")
    with pytest.raises(InputError, match=r"x\.bed:2: name 'b' is not in the label table"):
        list(read_bed(path, label_column=table))
    bed3 = _bed(tmp_path, "CHROMOSOME_I\t0\t5\n", "three.bed")
    with pytest.raises(InputError, match=r"three\.bed:1: no name \(column 4\)"):
        list(read_bed(bed3, label_column=table))
    with pytest.raises(InputError, match="column index >= 3"):
        read_bed(path, label_column=2)
    with pytest.raises(InputError, match="does not exist"):
        read_bed(tmp_path / "missing.bed")


def test_dataset_sequences_strands_and_ids(tmp_path, genome, ref):
    path = _bed(
        tmp_path,
        "CHROMOSOME_I\t1000\t1037\tfwd\t0\t+\tA\n"
        "CHROMOSOME_III\t17\t60\t.\t0\t-\tB\n"
        "CHROMOSOME_MtDNA\t4990\t5000\n",
    )
    ds = IntervalDataset(path, genome, None)
    assert len(ds) == 3
    assert ds[0] == ("fwd", ref.fetch("CHROMOSOME_I", 1000, 1037), None)
    assert ds[1] == ("CHROMOSOME_III:17-60(-)", _revcomp(ref.fetch("CHROMOSOME_III", 17, 60)), None)
    assert ds[2] == ("CHROMOSOME_MtDNA:4990-5000", ref.fetch("CHROMOSOME_MtDNA", 4990, 5000), None)


def test_dataset_labels_from_column(tmp_path, genome):
    path = _bed(tmp_path, "CHROMOSOME_I\t0\t5\ta\t0\t+\tup\nCHROMOSOME_I\t5\t9\tb\t0\t-\tdown\n")
    ds = IntervalDataset(path, genome, None, label_column=6)
    assert [ds[i].label for i in range(2)] == ["up", "down"]


def test_fixed_length_centring_trims_and_extends(genome, ref):
    ivs = [
        Interval("CHROMOSOME_I", 100, 111),  # width 11, centre 105
        Interval("CHROMOSOME_I", 200, 202),  # width 2, centre 201
        Interval("CHROMOSOME_I", 300, 311, strand="-"),
    ]
    ds = IntervalDataset(ivs, genome, None, length=4)
    assert [ds.window(i) for i in range(3)] == [(103, 107), (199, 203), (303, 307)]
    assert ds[0].sequence == ref.fetch("CHROMOSOME_I", 103, 107)
    assert ds[1].sequence == ref.fetch("CHROMOSOME_I", 199, 203)
    assert ds[2].sequence == _revcomp(ref.fetch("CHROMOSOME_I", 303, 307))
    odd = IntervalDataset(ivs[:1], genome, None, length=7)
    assert odd.window(0) == (102, 109) and len(odd[0].sequence) == 7


def test_windows_past_contig_ends_are_padded_with_n(genome, ref):
    ivs = [
        Interval("CHROMOSOME_I", 2, 6),  # centre 4: window [-1, 9)
        Interval("CHROMOSOME_II", 4995, 5000),  # centre 4997: window [4992, 5003)
        Interval("CHROMOSOME_II", 4995, 5000, strand="-"),
    ]
    start = IntervalDataset(ivs[:1], genome, None, length=10)
    assert start[0].sequence == "N" + ref.fetch("CHROMOSOME_I", 0, 9)
    ds = IntervalDataset(ivs[1:], genome, None, length=11)
    tail = ref.fetch("CHROMOSOME_II", 4992, 5000)
    assert ds[0].sequence == tail + "NNN"
    assert ds[1].sequence == "NNN" + _revcomp(tail)
    far = IntervalDataset([Interval("CHROMOSOME_II", 0, 4)], genome, None, length=40)
    assert far[0].sequence == "N" * 18 + ref.fetch("CHROMOSOME_II", 0, 22)


def test_random_shift_is_seeded_per_item_and_bounded(genome, ref):
    ivs = [Interval("CHROMOSOME_I", 1000 + 50 * i, 1020 + 50 * i) for i in range(200)]
    ds = IntervalDataset(ivs, genome, None, shift=3, seed=7)
    offsets = [ds.window(i)[0] - ivs[i].start for i in range(len(ivs))]
    assert set(offsets) == {-3, -2, -1, 0, 1, 2, 3}
    assert [ds.window(i) for i in range(len(ivs))] == [ds.window(i) for i in range(len(ivs))]
    again = IntervalDataset(ivs, genome, None, shift=3, seed=7)
    assert [again[i] for i in (5, 0, 199)] == [ds[i] for i in (5, 0, 199)]
    other = IntervalDataset(ivs, genome, None, shift=3, seed=8)
    assert [other.window(i) for i in range(len(ivs))] != [ds.window(i) for i in range(len(ivs))]
    start, end = ds.window(17)
    assert end - start == 20 and ds[17].sequence == ref.fetch("CHROMOSOME_I", start, end)


def test_tokenized_items_and_dataloader(tmp_path, genome, ref):
    tok = NucleotideTokenizer()
    path = _bed(tmp_path, "CHROMOSOME_I\t10\t17\ta\t0\t+\tx\nCHROMOSOME_V\t0\t12\tb\t0\t-\ty\n")
    ds = IntervalDataset(path, genome, tok, label_column=6)
    item = ds[1]
    assert item.sequence.dtype == torch.int64
    expected = tok.encode(_revcomp(ref.fetch("CHROMOSOME_V", 0, 12)))
    assert torch.equal(item.sequence, torch.from_numpy(expected))
    loader = DataLoader(ds, batch_size=2, collate_fn=Collate(tok, classes=["x", "y"]))
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (2, 12) and batch["attention_mask"].sum(1).tolist() == [7, 12]
    assert batch["labels"].tolist() == [0, 1] and batch["ids"] == ["a", "b"]
    assert torch.equal(batch["input_ids"][1], item.sequence)


def test_dataset_errors_name_the_line_and_contig(tmp_path, genome):
    path = _bed(tmp_path, "CHROMOSOME_I\t0\t5\nchrI\t0\t5\n")
    message = r"x\.bed:2: contig 'chrI' is not in .*ce_chrI_1mb\.fa \(it has CHROMOSOME_I,"
    with pytest.raises(InputError, match=message):
        IntervalDataset(path, genome, None)
    path = _bed(tmp_path, "CHROMOSOME_II\t4990\t5001\n", "past.bed")
    message = r"past\.bed:1: interval \[4990, 5001\) runs past the end of CHROMOSOME_II"
    with pytest.raises(InputError, match=message):
        IntervalDataset(path, genome, None)
    with pytest.raises(InputError, match="length=0"):
        IntervalDataset([], genome, None, length=0)
    with pytest.raises(InputError, match="shift=-1"):
        IntervalDataset([], genome, None, shift=-1)
