"""Reads from SAM/BAM/CRAM: real files, filters, strands, regions and every bad-input error."""

from __future__ import annotations

import pysam
import pytest

from seqssm.datasets.reads import iter_reads
from seqssm.errors import InputError

_COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")


def _revcomp(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


@pytest.fixture
def dna(shared_data):
    return shared_data / "dna"


def _raw_records(path, **kwargs):
    with pysam.AlignmentFile(str(path), **kwargs) as f:
        return list(f.fetch(until_eof=True))


def test_bam_reads_match_pysam_and_skip_missing_sequence(dna):
    raw = _raw_records(dna / "ce_5b.bam")
    it = iter_reads(dna / "ce_5b.bam")
    reads = list(it)
    with_seq = [r for r in raw if r.query_sequence is not None]
    assert len(raw) == 7 and len(with_seq) == 6
    assert [r.name for r in reads] == [r.query_name for r in with_seq]
    assert [r.sequence for r in reads] == [r.query_sequence for r in with_seq]
    assert [(r.contig, r.start, r.end) for r in reads] == [
        (r.reference_name, r.reference_start, r.reference_end) for r in with_seq
    ]
    assert it.skipped["no_sequence"] == 1 and it.yielded == 6


def test_original_strand_reverse_complements_reverse_reads_only(dna):
    stored = list(iter_reads(dna / "ce_5b.bam"))
    original = list(iter_reads(dna / "ce_5b.bam", original_strand=True))
    assert any(r.is_reverse for r in stored) and any(not r.is_reverse for r in stored)
    for s, o in zip(stored, original, strict=True):
        assert o.sequence == (_revcomp(s.sequence) if s.is_reverse else s.sequence)


def test_region_tuple_and_contig_name_on_indexed_bam(dna):
    by_name = list(iter_reads(dna / "ce_5b.bam", region="CHROMOSOME_V"))
    assert [r.name for r in by_name] == ["V", "VI"]
    # Read "V" covers [1, 102), read "VI" [9, 83): a window ending at 9 (half-open) holds only "V".
    assert [r.name for r in iter_reads(dna / "ce_5b.bam", region=("CHROMOSOME_V", 0, 9))] == ["V"]
    assert [r.name for r in iter_reads(dna / "ce_5b.bam", region=("CHROMOSOME_V", 83, 200))] == ["V"]
    assert list(iter_reads(dna / "ce_5b.bam", region=("CHROMOSOME_V", 102, 200))) == []


def test_cram_with_reference_matches_bam(dna):
    it = iter_reads(dna / "ce_5b.cram", reference=dna / "ce_chrI_1mb.fa", primary_only=True)
    cram = list(it)
    bam = list(iter_reads(dna / "ce_5b.bam", primary_only=True))
    assert [(r.name, r.sequence, r.contig, r.start) for r in cram] == [
        (r.name, r.sequence, r.contig, r.start) for r in bam
    ]
    assert it.skipped["not_primary"] == 1
    fasta = dna / "ce_chrI_1mb.fa"
    region = list(iter_reads(dna / "ce_5b.cram", region=("CHROMOSOME_I", 0, 50), reference=fasta))
    assert [r.name for r in region] == ["I"]


def test_megabase_read_is_whole_and_aligns_to_reference(dna):
    reads = list(iter_reads(dna / "ce_large_seq.bam", original_strand=True))
    big = next(r for r in reads if r.name == "S1")
    assert len(big.sequence) == 1_000_647 and not big.is_reverse
    (rec,) = [r for r in _raw_records(dna / "ce_large_seq.bam") if r.query_name == "S1"]
    ref = pysam.FastaFile(str(dna / "ce_chrI_1mb.fa")).fetch("CHROMOSOME_I", big.start, big.end)
    # Walk the CIGAR: match columns of a real alignment agree with the reference almost everywhere,
    # which would not hold for a truncated or shifted sequence.
    qi = ri = same = total = 0
    for op, n in rec.cigartuples:
        if op in (0, 7, 8):
            same += sum(a == b for a, b in zip(big.sequence[qi : qi + n], ref[ri : ri + n], strict=True))
            total += n
            qi, ri = qi + n, ri + n
        elif op in (1, 4):
            qi += n
        elif op in (2, 3):
            ri += n
    assert qi == len(big.sequence) and ri == big.end - big.start == 1_000_000
    assert same / total > 0.9


def test_unsorted_unindexed_bam_streams_with_filters(dna):
    raw = _raw_records(dna / "chm1_reads.bam")
    it = iter_reads(dna / "chm1_reads.bam", min_mapq=20, primary_only=True)
    kept = list(it)
    expected = [
        r
        for r in raw
        if r.mapping_quality >= 20 and not (r.is_secondary or r.is_supplementary or r.is_unmapped)
    ]
    assert len(raw) == 42_455
    assert [r.name for r in kept] == [r.query_name for r in expected]
    assert all(30 <= len(r.sequence) <= 100 for r in kept)
    assert it.yielded + sum(it.skipped.values()) == len(raw)
    assert it.skipped["not_primary"] == sum(r.is_secondary or r.is_supplementary for r in raw)


def test_mapped_only_and_sam_text(tmp_path, dna):
    sam = tmp_path / "reads.sam"
    src = pysam.AlignmentFile(str(dna / "ce_5b.bam"))
    with src, pysam.AlignmentFile(str(sam), "w", template=src) as dst:
        for rec in src.fetch(until_eof=True):
            dst.write(rec)
        unmapped = pysam.AlignedSegment(dst.header)
        unmapped.query_name = "lost"
        unmapped.query_sequence = "ACGTACGTAA"
        unmapped.flag = 4
        dst.write(unmapped)
    every = list(iter_reads(sam))
    assert [r.name for r in every][-1] == "lost" and every[-1].contig is None and every[-1].start is None
    it = iter_reads(sam, mapped_only=True)
    assert [r.name for r in it] == [r.name for r in every[:-1]]
    assert it.skipped["unmapped"] == 1


def test_region_without_index_is_an_error(dna):
    message = r"has no index \(\.bai/\.csi\); run `samtools index .*` or drop the region"
    with pytest.raises(InputError, match=message):
        iter_reads(dna / "chm1_reads.bam", region="1")


def test_cram_without_reference_is_an_error(dna):
    with pytest.raises(InputError, match="CRAM file; pass --reference"):
        iter_reads(dna / "ce_5b.cram")
    with pytest.raises(InputError, match="CRAM reference .* does not exist"):
        iter_reads(dna / "ce_5b.cram", reference=dna / "missing.fa")


def test_bad_region_missing_file_and_non_alignment_file(tmp_path, dna):
    with pytest.raises(InputError, match="'chrZ' is not in the header"):
        iter_reads(dna / "ce_5b.bam", region="chrZ")
    with pytest.raises(InputError, match="0 <= start <= end"):
        iter_reads(dna / "ce_5b.bam", region=("CHROMOSOME_I", 50, 10))
    with pytest.raises(InputError, match="0 <= start <= end"):
        iter_reads(dna / "ce_5b.bam", region=("CHROMOSOME_I", -1, 10))
    with pytest.raises(InputError, match="does not exist"):
        iter_reads(tmp_path / "nope.bam")
    text = tmp_path / "notes.bam"
    text.write_text("not an alignment\n")
    with pytest.raises(InputError, match="cannot be read as SAM/BAM/CRAM"):
        iter_reads(text)
    with pytest.raises(InputError, match="min_mapq"):
        iter_reads(dna / "ce_5b.bam", min_mapq=-1)
