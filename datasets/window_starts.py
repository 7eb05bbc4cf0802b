"""Where random training windows start, for every dataset that draws them (genome contigs, byte files).

Records (contigs, files) of lengths N_r are cut into splits: each record's last ``round(val_fraction · N_r)``
positions are "val", the rest "train", "all" is the whole record. A window start is uniform over every
position of every record that leaves a whole window inside the record's split: one integer k drawn in
[0, S) (S: the number of such starts over all records) is mapped through the cumulative start counts to
(record, start). Item i of a dataset draws from ``item_rng(seed, i)`` alone, so DataLoader workers,
shuffling and resumed runs all see the same windows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "all")


def item_rng(seed: int, i: int) -> np.random.Generator:
    """The generator of item ``i``: a function of (seed, i) alone."""
    return np.random.default_rng([seed, i])


def split_regions(lengths: Sequence[int], split: str, val_fraction: float) -> list[tuple[int, int]]:
    """(lo, hi) half-open of each record's part in ``split`` ("train", "val" or "all")."""
    regions = []
    for length in lengths:
        train_end = length - round(val_fraction * length)
        regions.append({"train": (0, train_end), "val": (train_end, length), "all": (0, length)}[split])
    return regions


class WindowStarts:
    """The window starts of records of ``lengths`` in ``split``: ``total`` of them, drawn by :meth:`draw`.

    ``regions``: (lo, hi) of each record in the split; ``longest``: the longest of them (for the message
    when ``total`` is 0, i.e. the window fits in no record).
    """

    def __init__(self, lengths: Sequence[int], window: int, split: str, val_fraction: float):
        self.window = window
        self.regions = split_regions(lengths, split, val_fraction)
        counts = np.array([max(0, hi - lo - window + 1) for lo, hi in self.regions], dtype=np.int64)
        self._cumulative = np.cumsum(counts)
        self.total = int(self._cumulative[-1]) if len(counts) else 0
        self.longest = max((hi - lo for lo, hi in self.regions), default=0)

    def start_of(self, k: int) -> tuple[int, int]:
        """(record index, start) of the k-th start, 0 <= k < total, in record order."""
        r = int(np.searchsorted(self._cumulative, k, side="right"))
        return r, self.regions[r][0] + k - (int(self._cumulative[r - 1]) if r else 0)

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """(record index, start) uniform over every start; takes one ``rng.integers(total)`` draw."""
        return self.start_of(int(rng.integers(self.total)))
