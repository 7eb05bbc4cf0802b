"""The one window-start draw shared by genome and byte windows (seqssm.datasets.window_starts): the windows both
datasets draw are, bit for bit, the ones they drew before the draw was shared (starts recorded from the
previous, separate implementations on fixed seeds), and the helper equals the inline formula it replaced."""

from __future__ import annotations

import numpy as np
import pytest

from seqssm.datasets.byte_windows import ByteWindowDataset
from seqssm.datasets.window_starts import WindowStarts, item_rng, split_regions
from seqssm.datasets.windows import GenomeWindowDataset

CONTIGS, FILES = ["c1", "c2", "c3"], ["a.txt", "b/c.bin", "d.txt"]

# (dataset, seed, split) -> per item (record index, start[, reverse]) as drawn before the helper existed: genome
# windows of 50 (max_n_fraction 0.1, so the N block forces redraws), byte windows of 40, val_fraction 0.2.
RECORDED = {
    ('G', 0, 'train'): [(1, 734, 1), (1, 784, 0), (1, 898, 1), (1, 790, 1), (1, 222, 1), (1, 135, 1), (1, 223, 1),
        (0, 49, 0), (1, 51, 0), (0, 330, 0), (1, 19, 1), (0, 180, 1)],
    ('B', 0, 'train'): [(1, 617), (1, 300), (1, 741), (1, 283), (1, 231), (1, 468), (1, 232), (1, 565), (1, 102),
        (1, 46), (1, 78), (0, 136)],
    ('G', 0, 'val'): [(1, 1115, 1), (1, 1035, 0), (1, 1147, 1), (1, 1031, 0), (1, 1018, 1), (1, 1078, 0), (1, 1018,
        1), (1, 1102, 0), (1, 985, 0), (1, 971, 0), (1, 979, 1), (0, 436, 1)],
    ('B', 0, 'val'): [(1, 933), (1, 874), (1, 957), (1, 870), (1, 861), (1, 905), (1, 861), (1, 923), (1, 836), (1,
        826), (1, 832), (1, 804)],
    ('G', 0, 'all'): [(1, 935, 1), (1, 999, 0), (1, 1146, 1), (1, 1008, 1), (1, 988, 1), (1, 170, 1), (1, 219, 0),
        (1, 847, 0), (1, 63, 0), (0, 422, 0), (1, 22, 1), (0, 231, 1)],
    ('B', 0, 'all'): [(1, 783), (1, 379), (1, 941), (1, 357), (1, 291), (1, 593), (1, 292), (1, 717), (1, 127), (1,
        55), (1, 96), (0, 174)],
    ('G', 5, 'train'): [(1, 12, 1), (0, 169, 1), (0, 303, 0), (1, 888, 1), (1, 2, 0), (1, 882, 1), (0, 27, 1), (1,
        32, 1), (1, 906, 0), (1, 815, 0), (1, 146, 0), (1, 75, 1)],
    ('B', 5, 'train'): [(1, 443), (0, 127), (1, 561), (1, 733), (1, 486), (1, 300), (0, 20), (1, 88), (1, 269), (1,
        678), (1, 174), (1, 120)],
    ('G', 5, 'val'): [(1, 1072, 0), (0, 434, 1), (1, 1101, 1), (1, 1144, 1), (1, 1082, 1), (1, 1035, 0), (0, 407,
        1), (1, 982, 1), (1, 1027, 1), (1, 1131, 0), (1, 1003, 0), (1, 990, 1)],
    ('B', 5, 'val'): [(1, 901), (1, 803), (1, 923), (1, 955), (1, 909), (1, 874), (0, 244), (1, 833), (1, 868), (1,
        945), (1, 850), (1, 840)],
    ('G', 5, 'all'): [(1, 861, 0), (0, 216, 1), (1, 841, 1), (1, 1132, 1), (1, 714, 1), (1, 1125, 1), (0, 34, 1),
        (1, 39, 1), (2, 4, 0), (1, 1040, 0), (1, 184, 0), (1, 93, 1)],
    ('B', 5, 'all'): [(1, 562), (0, 162), (1, 712), (1, 931), (1, 616), (1, 379), (0, 26), (1, 109), (1, 339), (1,
        861), (1, 218), (1, 149)],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("starts")
    rng = np.random.default_rng(7)
    seqs = {n: "".join(rng.choice(list("ACGTacgt"), size=k)) for n, k in [("c1", 503), ("c2", 1201), ("c3", 77)]}
    seqs["c2"] = seqs["c2"][:300] + "N" * 400 + seqs["c2"][700:]
    (root / "g.fa").write_text("".join(f">{n}\n{s}\n" for n, s in seqs.items()))
    folder = root / "files"
    for name, n in [("a.txt", 301), ("b/c.bin", 1000), ("d.txt", 45)]:
        (folder / name).parent.mkdir(exist_ok=True, parents=True)
        (folder / name).write_bytes(bytes(np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)))
    return root / "g.fa", folder


@pytest.mark.parametrize("key", sorted(RECORDED, key=str))
def test_drawn_windows_are_the_ones_drawn_before(key, data):
    kind, seed, split = key
    genome, folder = data
    if kind == "G":
        ds = GenomeWindowDataset(genome, 50, num_samples=12, seed=seed, split=split, val_fraction=0.2,
                                 max_n_fraction=0.1)
        got = [(CONTIGS.index(w.contig), w.start, int(w.reverse)) for w in map(ds.locate, range(12))]
    else:
        ds = ByteWindowDataset(folder, 40, num_samples=12, seed=seed, split=split, val_fraction=0.2)
        got = [(FILES.index(name), start) for name, start, _ in map(ds.locate, range(12))]
    assert got == RECORDED[key]


def _inline(lengths, window, split, val_fraction, seed, i):
    """The draw as both datasets wrote it before they shared it: (record, start)."""
    regions = []
    for length in lengths:
        train_end = length - round(val_fraction * length)
        regions.append({"train": (0, train_end), "val": (train_end, length), "all": (0, length)}[split])
    cum = np.cumsum(np.array([max(0, hi - lo - window + 1) for lo, hi in regions], dtype=np.int64))
    k = int(np.random.default_rng([seed, i]).integers(int(cum[-1])))
    r = int(np.searchsorted(cum, k, side="right"))
    return r, regions[r][0] + k - (int(cum[r - 1]) if r else 0)


@pytest.mark.parametrize("split", ["train", "val", "all"])
def test_helper_equals_the_inline_draw_it_replaced(split):
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(1, 400, size=9)] + [3, 0, 1000]
    starts = WindowStarts(lengths, 17, split, 0.15)
    assert starts.regions == split_regions(lengths, split, 0.15)
    assert starts.total == sum(max(0, hi - lo - 17 + 1) for lo, hi in starts.regions)
    for seed in (0, 3):
        for i in range(200):
            record, start = starts.draw(item_rng(seed, i))
            assert (record, start) == _inline(lengths, 17, split, 0.15, seed, i)
            lo, hi = starts.regions[record]
            assert lo <= start and start + 17 <= hi  # a whole window inside the record's split
    # Every start is reachable, each exactly once, in record order.
    every = [starts.start_of(k) for k in range(starts.total)]
    assert every == [(r, s) for r, (lo, hi) in enumerate(starts.regions) for s in range(lo, hi - 17 + 1)]


def test_no_start_when_the_window_fits_nowhere():
    starts = WindowStarts([10, 20], 21, "all", 0.1)
    assert starts.total == 0 and starts.longest == 20
