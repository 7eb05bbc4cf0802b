"""Genome windows against a reference read: every item equals the tokenized slice its location names."""

import gzip

import numpy as np
import pysam
import pytest
import torch

from seqssm.data import lambda_phage_fasta
from seqssm.datasets.fasta import iter_fasta
from seqssm.datasets.windows import GenomeWindowDataset, Window, tile_windows
from seqssm.errors import InputError
from seqssm.tokenizers import ByteTokenizer, NucleotideTokenizer

TOK = NucleotideTokenizer()


def write_genome(path, n_block: bool = True) -> dict[str, str]:
    rng = np.random.default_rng(7)
    seqs = {name: "".join(rng.choice(list("ACGTacgt"), size=n)) for name, n in [("c1", 503), ("c2", 1201)]}
    seqs["short"] = "ACGTACGTAC"
    if n_block:
        seqs["c2"] = seqs["c2"][:300] + "N" * 400 + seqs["c2"][700:]
    lines = []
    for name, seq in seqs.items():
        lines += [f">{name}"] + [seq[i : i + 60] for i in range(0, len(seq), 60)]
    path.write_text("\n".join(lines) + "\n")
    return seqs


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQSSM_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def genome(tmp_path):
    path = tmp_path / "g.fa"
    return path, write_genome(path)


def expected_item(seqs: dict[str, str], win: Window) -> list[int]:
    ids = TOK.encode(seqs[win.contig][win.start : win.end])
    return (TOK.reverse_complement(ids) if win.reverse else ids).tolist()


def test_items_equal_the_slices_they_name(genome):
    path, seqs = genome
    ds = GenomeWindowDataset(path, 101, num_samples=60, seed=3, max_n_fraction=1.0, split="all")
    assert len(ds) == 60
    for i in range(len(ds)):
        item, win = ds[i], ds.locate(i)
        assert item.dtype == torch.int64 and item.shape == (101,)
        assert int(item.min()) >= TOK.a_id and int(item.max()) <= TOK.n_id
        assert win.end - win.start == 101 and 0 <= win.start and win.end <= len(seqs[win.contig])
        assert item.tolist() == expected_item(seqs, win)
    with pytest.raises(IndexError):
        ds[60]


def test_item_depends_only_on_seed_and_index(genome):
    path, _ = genome
    a = GenomeWindowDataset(path, 64, num_samples=20, seed=5)
    b = GenomeWindowDataset(path, 64, num_samples=20, seed=5)
    forward = [a[i] for i in range(20)]
    backward = [b[i] for i in reversed(range(20))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(forward, backward, strict=True))
    loader = torch.utils.data.DataLoader(a, batch_size=6, shuffle=False)
    assert torch.equal(torch.cat(list(loader)), torch.stack(forward))
    other = GenomeWindowDataset(path, 64, num_samples=20, seed=6)
    assert sum(torch.equal(other[i], forward[i]) for i in range(20)) < 3


def test_worker_processes_see_the_same_items(genome):
    path, _ = genome
    ds = GenomeWindowDataset(path, 64, num_samples=16, seed=1)
    direct = torch.stack([ds[i] for i in range(16)])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    assert torch.equal(torch.cat(list(loader)), direct)


def test_strands_mix_and_one_strand_keeps_positions(genome):
    path, seqs = genome
    both = GenomeWindowDataset(path, 50, num_samples=200, seed=2)
    fwd = GenomeWindowDataset(path, 50, num_samples=200, seed=2, both_strands=False)
    reverse = [both.locate(i).reverse for i in range(200)]
    assert 60 < sum(reverse) < 140
    for i in range(200):
        w, f = both.locate(i), fwd.locate(i)
        assert (f.contig, f.start, f.end, f.reverse) == (w.contig, w.start, w.end, False)
        expected = TOK.reverse_complement(fwd[i]) if w.reverse else fwd[i]
        assert torch.equal(both[i], expected)


def test_windows_with_too_many_n_are_redrawn(genome):
    path, _ = genome
    window = 100
    strict = GenomeWindowDataset(path, window, num_samples=150, seed=0, max_n_fraction=0.1, split="all")
    n_counts = [int((strict[i] == TOK.n_id).sum()) for i in range(150)]
    assert max(n_counts) <= 10
    loose = GenomeWindowDataset(path, window, num_samples=150, seed=0, max_n_fraction=1.0, split="all")
    assert max(int((loose[i] == TOK.n_id).sum()) for i in range(150)) == window


def test_mostly_n_genome_fails_clearly(tmp_path):
    path = tmp_path / "n.fa"
    path.write_text(">n\n" + "N" * 500 + "\n")
    ds = GenomeWindowDataset(path, 50, num_samples=2, max_n_fraction=0.2, split="all")
    with pytest.raises(InputError, match="at most 10 N in 100 draws.*raise max_n_fraction"):
        ds[0]


def test_train_and_val_are_disjoint_tails(genome):
    path, seqs = genome
    train = GenomeWindowDataset(path, 40, num_samples=300, seed=0, max_n_fraction=1.0, split="train")
    val = GenomeWindowDataset(path, 40, num_samples=300, seed=0, max_n_fraction=1.0, split="val")
    cut = {name: len(s) - round(0.1 * len(s)) for name, s in seqs.items()}
    assert [hi for _, hi in train.regions] == [cut[c] for c in train.contigs]
    assert [lo for lo, _ in val.regions] == [cut[c] for c in val.contigs]
    for i in range(300):
        t, v = train.locate(i), val.locate(i)
        assert t.end <= cut[t.contig]
        assert v.start >= cut[v.contig] and v.end <= len(seqs[v.contig])
        assert val[i].tolist() == expected_item(seqs, v)
    # c1's val tail (50 bp) fits 40 bp windows; c2's (120 bp) too; "short" has none.
    assert {val.locate(i).contig for i in range(300)} == {"c1", "c2"}


def test_too_long_window_names_longest_length(genome):
    path, _ = genome
    with pytest.raises(InputError, match=r"split 'val' \(longest available: 120 bp\).*split='all'"):
        GenomeWindowDataset(path, 121, split="val")
    with pytest.raises(InputError, match=r"longest available: 1201 bp"):
        GenomeWindowDataset(path, 1202, split="all")
    assert GenomeWindowDataset(path, 1201, split="all", max_n_fraction=1.0).locate(0).contig == "c2"
    with pytest.raises(InputError, match=r"split 'val' of .* is empty \(val_fraction=0.0\)"):
        GenomeWindowDataset(path, 5, split="val", val_fraction=0.0)


def test_random_access_equals_in_memory(tmp_path, genome):
    path, seqs = genome
    bgz = tmp_path / "g.fa.bgz"
    pysam.tabix_compress(str(path), str(bgz))
    args = dict(window=77, num_samples=40, seed=9, max_n_fraction=0.3)
    in_memory = GenomeWindowDataset(path, **args)
    for source in (path, bgz):
        indexed = GenomeWindowDataset(source, in_memory_max_bp=0, **args)
        assert indexed._codes is None and indexed._fasta is not None
        for i in range(40):
            assert indexed.locate(i) == in_memory.locate(i)
            assert torch.equal(indexed[i], in_memory[i])


def test_plain_gzip_loads_in_memory_but_not_when_too_big(tmp_path, genome):
    path, seqs = genome
    gz = tmp_path / "g.fa.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    ds = GenomeWindowDataset(gz, 30, num_samples=10, max_n_fraction=1.0)
    assert ds.contigs == ["c1", "c2", "short"]
    assert all(ds[i].tolist() == expected_item(seqs, ds.locate(i)) for i in range(10))
    with pytest.raises(InputError, match="plain gzip and holds more than 1000 bp.*bgzip"):
        GenomeWindowDataset(gz, 30, in_memory_max_bp=1000)


def test_bundled_lambda_phage():
    ds = GenomeWindowDataset(lambda_phage_fasta(), 1024, num_samples=8, split="val")
    assert ds.regions == [(48_502 - 4_850, 48_502)]
    assert torch.stack([ds[i] for i in range(8)]).shape == (8, 1024)


def test_shared_genome_random_access(shared_data):
    path = shared_data / "dna" / "ce_chrI_1mb.fa"
    seqs = dict(iter_fasta(path))
    ds = GenomeWindowDataset(path, 2000, num_samples=20, seed=4, in_memory_max_bp=0)
    for i in range(20):
        assert ds[i].tolist() == expected_item(seqs, ds.locate(i))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(window=0), "window=0"),
        (dict(split="test"), "split='test'"),
        (dict(val_fraction=1.0), "val_fraction=1.0"),
        (dict(max_n_fraction=1.5), "max_n_fraction=1.5"),
        (dict(seed=-1), "seed=-1"),
        (dict(num_samples=-1), "num_samples=-1"),
        (dict(tokenizer=ByteTokenizer()), "needs a NucleotideTokenizer"),
    ],
)
def test_bad_arguments(genome, kwargs, message):
    path, _ = genome
    with pytest.raises(InputError, match=message):
        GenomeWindowDataset(path, **{"window": 10, **kwargs})


def test_invalid_base_in_genome_names_contig(tmp_path):
    path = tmp_path / "bad.fa"
    path.write_text(">ok\nACGT\n>broken\nACGT-ACGT\n")
    with pytest.raises(InputError, match="'-' at position 4 in broken of"):
        GenomeWindowDataset(path, 3)


def test_tiles_cover_every_contig(genome):
    path, seqs = genome
    tiles = list(tile_windows(path, 100))
    for name, seq in seqs.items():
        mine = [t for t in tiles if t[0] == name]
        starts = range(0, len(seq), 100)
        assert [(s, e) for _, s, e, _ in mine] == [(s, min(s + 100, len(seq))) for s in starts]
        assert torch.cat([ids for *_, ids in mine]).tolist() == TOK.encode(seq).tolist()
    assert [t[0] for t in tiles] == sorted((t[0] for t in tiles), key=list(seqs).index)


def test_overlapping_tiles_and_short_contigs(genome):
    path, seqs = genome
    tiles = [t for t in tile_windows(path, 200, stride=150) if t[0] == "c1"]
    assert [(s, e) for _, s, e, _ in tiles] == [(0, 200), (150, 350), (300, 500), (450, 503)]
    for _, s, e, ids in tiles:
        assert ids.dtype == torch.int64 and ids.tolist() == TOK.encode(seqs["c1"][s:e]).tolist()
    ((_, s, e, ids),) = [t for t in tile_windows(path, 200, stride=150) if t[0] == "short"]
    assert (s, e, len(ids)) == (0, 10, 10)


def test_tile_arguments(genome):
    path, _ = genome
    with pytest.raises(InputError, match="stride=11"):
        tile_windows(path, 10, stride=11)
    with pytest.raises(InputError, match="window=0"):
        tile_windows(path, 0)
    with pytest.raises(InputError, match="does not exist"):
        tile_windows(path.with_name("missing.fa"), 10)
