"""FASTA input: indexed random access equals slices of a streamed read; index placement; bad inputs."""

import gzip
import os
import pickle
import shutil
import stat

import numpy as np
import pysam
import pytest

from seqssm.data import lambda_phage_fasta
from seqssm.datasets.fasta import FastaFile, cache_dir, iter_fasta, sniff_compression
from seqssm.errors import InputError

RECORDS = {"chrA": 503, "chrB": 1201, "chrM": 17}


def make_records(seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    alphabet = list("ACGTACGTACGTacgtN")
    return {name: "".join(rng.choice(alphabet, size=n)) for name, n in RECORDS.items()}


def write_fasta(path, records: dict[str, str], width: int = 60) -> None:
    lines = []
    for name, seq in records.items():
        lines.append(f">{name} some description")
        lines += [seq[i : i + width] for i in range(0, len(seq), width)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQSSM_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def records():
    return make_records()


@pytest.fixture
def plain(tmp_path, records):
    path = tmp_path / "genome.fa"
    write_fasta(path, records, width=7)
    return path


@pytest.fixture
def bgzipped(tmp_path, plain):
    out = tmp_path / "genome.fa.bgz"
    pysam.tabix_compress(str(plain), str(out))
    return out


def assert_random_regions_match(fasta: FastaFile, records: dict[str, str], draws: int = 50) -> None:
    rng = np.random.default_rng(1)
    for _ in range(draws):
        name = list(records)[rng.integers(len(records))]
        n = len(records[name])
        start, end = sorted(rng.integers(0, n + 1, size=2).tolist())
        assert fasta.fetch(name, start, end) == records[name][start:end]
    for name, seq in records.items():
        assert fasta.fetch(name) == seq


def test_plain_fasta_random_access_matches_stream(plain, records):
    assert dict(iter_fasta(plain)) == records
    with FastaFile(plain) as fa:
        assert fa.contigs == tuple(records)
        assert fa.lengths == {k: len(v) for k, v in records.items()}
        assert_random_regions_match(fa, records)
    # A writable folder gets the conventional index beside the FASTA.
    assert fa.fai == plain.parent / "genome.fa.fai" and fa.fai.is_file() and fa.gzi is None


def test_bgzip_random_access_builds_fai_and_gzi(bgzipped, records):
    assert sniff_compression(bgzipped) == "bgzip"
    assert dict(iter_fasta(bgzipped)) == records
    fa = FastaFile(bgzipped)
    assert fa.fai.is_file() and fa.gzi.is_file() and fa.gzi.name == "genome.fa.bgz.gzi"
    assert_random_regions_match(fa, records)


def test_read_only_folder_puts_index_in_cache(tmp_path, plain, bgzipped, records):
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(plain, ro / "g.fa")
    shutil.copy(bgzipped, ro / "g.fa.gz")
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        for name in ("g.fa", "g.fa.gz"):
            fa = FastaFile(ro / name)
            assert fa.fai.parent == cache_dir() / "fai" and cache_dir() == tmp_path / "cache"
            assert_random_regions_match(fa, records, draws=10)
            built = fa.fai.stat().st_mtime_ns
            again = FastaFile(ro / name)
            assert again.fai == fa.fai and again.fai.stat().st_mtime_ns == built
        assert sorted(p.name for p in ro.iterdir()) == ["g.fa", "g.fa.gz"]
        assert sorted(p.suffix for p in (tmp_path / "cache" / "fai").iterdir()) == [".fai", ".fai", ".gzi"]
    finally:
        ro.chmod(stat.S_IRWXU)


def test_changed_fasta_never_meets_its_stale_index(tmp_path, plain):
    first = FastaFile(plain)
    assert first.fai.parent == plain.parent
    write_fasta(plain, {"other": "ACGTACGTAC"})
    later = first.fai.stat().st_mtime + 10
    os.utime(plain, (later, later))
    second = FastaFile(plain)
    assert second.fai.parent == cache_dir() / "fai"
    assert second.lengths == {"other": 10} and second.fetch("other", 2, 5) == "GTA"


def test_shared_genome_with_existing_index(shared_data, tmp_path):
    path = shared_data / "dna" / "ce_chrI_1mb.fa"
    before = sorted(p.name for p in path.parent.iterdir())
    fa = FastaFile(path)
    assert fa.fai == path.parent / "ce_chrI_1mb.fa.fai"
    streamed = dict(iter_fasta(path))
    assert fa.lengths == {k: len(v) for k, v in streamed.items()}
    assert fa.lengths["CHROMOSOME_I"] == 1_009_800
    assert_random_regions_match(fa, streamed, draws=20)
    assert sorted(p.name for p in path.parent.iterdir()) == before


def test_shared_ecoli_streams_but_cannot_be_indexed(shared_data):
    path = shared_data / "dna" / "ecoli_536.fna.gz"
    ((name, seq),) = list(iter_fasta(path))
    assert name == "gi|110640213|ref|NC_008253.1|" and len(seq) == 4_938_920
    with pytest.raises(InputError, match="gzip but not bgzip; recompress"):
        FastaFile(path)


def test_plain_gzip_is_refused_with_advice(tmp_path, plain, records):
    gz = tmp_path / "genome.fa.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert sniff_compression(gz) == "gzip"
    with pytest.raises(InputError, match=r"gzip but not bgzip.*`bgzip`.*streaming"):
        FastaFile(gz)
    assert dict(iter_fasta(gz)) == records


def test_compression_is_sniffed_not_guessed_from_the_name(tmp_path, plain, records):
    gz_named_plain = tmp_path / "looks_plain.fa"
    gz_named_plain.write_bytes(gzip.compress(plain.read_bytes()))
    plain_named_gz = tmp_path / "looks_gzip.fa.gz"
    shutil.copy(plain, plain_named_gz)
    assert sniff_compression(gz_named_plain) == "gzip"
    assert sniff_compression(plain_named_gz) == "plain"
    assert dict(iter_fasta(gz_named_plain)) == records
    assert FastaFile(plain_named_gz).fetch("chrB", 100, 140) == records["chrB"][100:140]


def test_bundled_lambda_phage_streams():
    ((name, seq),) = list(iter_fasta(lambda_phage_fasta()))
    assert name.endswith("NC_001416.1|") and len(seq) == 48_502
    assert set(seq) <= set("ACGT")


def test_fetch_errors(plain):
    fa = FastaFile(plain)
    with pytest.raises(InputError, match="contig 'chrZ' is not in .* it has chrA, chrB, chrM"):
        fa.fetch("chrZ", 0, 1)
    for start, end in [(-1, 5), (5, 4), (0, 504)]:
        with pytest.raises(InputError, match=rf"region \[{start}, {end}\) is outside chrA .*length 503"):
            fa.fetch("chrA", start, end)


def test_fasta_file_pickles_for_workers(plain, records):
    fa = FastaFile(plain)
    fa.fetch("chrA", 0, 3)
    clone = pickle.loads(pickle.dumps(fa))
    assert clone.fetch("chrB", 7, 70) == records["chrB"][7:70]


def test_streaming_multi_fasta_details(tmp_path):
    path = tmp_path / "multi.fa"
    path.write_text("\n\n>one first record\nACGT\nac\n\n>two\nNNNN\n>three\r\nGGG\r\n")
    assert list(iter_fasta(path)) == [("one", "ACGTac"), ("two", "NNNN"), ("three", "GGG")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"is empty \(no FASTA records\)"),
        (b"\n  \n\n", "is empty"),
        (b"\n\nhello world\n>a\nAC\n", r"is not FASTA: line 3 starts with 'hello world'"),
        (b"ACGTACGT\n", "is not FASTA: line 1"),
        (b">a\nACGT\n>b\n>c\nGG\n", r"record 'b' \(record 2\) has no sequence"),
        (b">a\nACGT\n>\nGG\n", "record 2 has an empty header"),
    ],
)
def test_bad_fasta_inputs(tmp_path, content, message):
    for compress in (False, True):
        path = tmp_path / ("bad.fa.gz" if compress else "bad.fa")
        path.write_bytes(gzip.compress(content) if compress else content)
        with pytest.raises(InputError, match=message) as err:
            list(iter_fasta(path))
        assert str(path) in str(err.value)


def test_bad_inputs_are_caught_when_opening_too(tmp_path):
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    not_fasta = tmp_path / "table.fa"
    not_fasta.write_text("sequence\tlabel\nACGT\t1\n")
    for path, message in [(empty, "is empty"), (not_fasta, "is not FASTA")]:
        with pytest.raises(InputError, match=message):
            iter_fasta(path)
        with pytest.raises(InputError, match=message):
            FastaFile(path)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        iter_fasta(tmp_path / "nope.fa")
    with pytest.raises(InputError, match="does not exist"):
        FastaFile(tmp_path / "nope.fa")
    with pytest.raises(InputError, match="is not a regular file"):
        iter_fasta(tmp_path)


def test_truncated_gzip(tmp_path, plain):
    data = gzip.compress(plain.read_bytes())
    path = tmp_path / "cut.fa.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt gzip"):
        list(iter_fasta(path))


def test_unindexable_plain_fasta(tmp_path):
    path = tmp_path / "ragged.fa"
    path.write_text(">a\nACGT\nAC\nACGT\n")
    with pytest.raises(InputError, match="samtools faidx cannot index .*ragged.fa.*iter_fasta"):
        FastaFile(path)
    assert list(iter_fasta(path)) == [("a", "ACGTACACGT")]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
