"""Fixed-length windows of a genome as token ids: random windows for training, tiles for embedding."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from seqssm.datasets.fasta import FastaFile, iter_fasta, sniff_compression
from seqssm.datasets.window_starts import WindowStarts, item_rng
from seqssm.errors import InputError
from seqssm.tokenizers import NucleotideTokenizer

_MAX_DRAWS = 100


@dataclass(frozen=True)
class Window:
    """Where an item came from: ``contig[start:end]`` (0-based half-open), reverse-complemented or not."""

    contig: str
    start: int
    end: int
    reverse: bool


class GenomeWindowDataset(Dataset):
    """``num_samples`` windows of ``window`` token ids (int64 tensor [W]) drawn from a FASTA genome.

    Window starts are uniform over every position of every contig that fits a whole window inside the
    split. Splits: each contig's last ``round(val_fraction * length)`` bases are "val", the rest "train";
    a train window never overlaps the val part of its contig (and vice versa), "all" uses whole contigs.
    With ``both_strands`` a window is reverse-complemented with probability 0.5. A window with more than
    ``max_n_fraction`` N is redrawn (up to 100 times, then InputError).

    Item i depends only on (seed, i) — its draws come from ``np.random.default_rng([seed, i])``, through
    :class:`~seqssm.datasets.window_starts.WindowStarts` — so DataLoader workers, shuffling and resumed runs
    all see the same windows.

    Genomes up to ``in_memory_max_bp`` bases are read once into uint8 token arrays (any FASTA, plain gzip
    included); larger ones are read per item through :class:`FastaFile` (plain or bgzip FASTA only).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        window: int,
        tokenizer: NucleotideTokenizer | None = None,
        num_samples: int = 10_000,
        seed: int = 0,
        both_strands: bool = True,
        max_n_fraction: float = 0.5,
        split: str = "train",
        val_fraction: float = 0.1,
        in_memory_max_bp: int = 64_000_000,
    ):
        tokenizer = NucleotideTokenizer() if tokenizer is None else tokenizer
        window = int(window) if isinstance(window, np.integer) else window
        _check_args(window, tokenizer, num_samples, seed, max_n_fraction, split, val_fraction)
        self.path, self.window, self.tokenizer = path, window, tokenizer
        self.num_samples, self.seed, self.both_strands = num_samples, seed, both_strands
        self.max_n = int(np.floor(max_n_fraction * window))
        self.split = split

        self._fasta: FastaFile | None = None
        self._codes: list[np.ndarray] | None = None
        kind = sniff_compression(path)
        # A plain file no bigger than the limit holds fewer bases than that: stream it, no index needed.
        if kind == "gzip" or (kind == "plain" and os.path.getsize(path) <= in_memory_max_bp):
            self.contigs, self._codes = self._load_streamed(in_memory_max_bp)
            lengths = [len(c) for c in self._codes]
        else:
            fasta = FastaFile(path)
            self.contigs, lengths = list(fasta.contigs), [fasta.lengths[c] for c in fasta.contigs]
            if sum(lengths) <= in_memory_max_bp:
                self._codes = [self._encode(fasta.fetch(c), c) for c in self.contigs]
                fasta.close()
            else:
                self._fasta = fasta

        # Usable part of each contig in this split, and how many window starts it offers.
        self._starts = WindowStarts(lengths, window, split, val_fraction)
        self.regions: list[tuple[int, int]] = self._starts.regions
        if self._starts.total == 0:
            longest = self._starts.longest
            if longest == 0:
                raise InputError(f"split {split!r} of {path} is empty (val_fraction={val_fraction}); raise "
                                 "--val-fraction")
            raise InputError(
                f"window {window} is longer than every contig of {path} in split {split!r} (longest "
                f"available: {longest} bp); lower --window to fit"
                + (" (or, in Python, use split='all')" if split != "all" else "")
            )

    def _encode(self, seq: str, contig: str, offset: int | None = None) -> np.ndarray:
        where = f"{contig} of {self.path}" + (f" (window starting at {offset})" if offset is not None else "")
        return self.tokenizer.encode_codes(seq, source=where)

    def _load_streamed(self, max_bp: int) -> tuple[list[str], list[np.ndarray]]:
        names, codes, total = [], [], 0
        for name, seq in iter_fasta(self.path):
            total += len(seq)
            if total > max_bp:
                raise InputError(
                    f"{self.path} is plain gzip and holds more than {max_bp} bp, too much to keep in memory; "
                    "recompress it with `bgzip` so windows can be read by random access"
                )
            names.append(name)
            codes.append(self._encode(seq, name))
        return names, codes

    def __len__(self) -> int:
        return self.num_samples

    def _read(self, contig_idx: int, start: int) -> np.ndarray:
        end = start + self.window
        if self._codes is not None:
            return self._codes[contig_idx][start:end]
        name = self.contigs[contig_idx]
        return self._encode(self._fasta.fetch(name, start, end), name, offset=start)

    def _draw(self, i: int) -> tuple[Window, np.ndarray]:
        if not 0 <= i < self.num_samples:
            raise IndexError(f"item {i} out of range for {self.num_samples} samples")
        rng = item_rng(self.seed, i)
        for _ in range(_MAX_DRAWS):
            c, start = self._starts.draw(rng)
            # The coin is drawn even on one strand, so both_strands=False gives the same positions.
            coin = rng.random()
            codes = self._read(c, start)
            if np.count_nonzero(codes == self.tokenizer.n_id) <= self.max_n:
                reverse = self.both_strands and coin < 0.5
                return Window(self.contigs[c], start, start + self.window, reverse), codes
        raise InputError(
            f"no window of {self.path} ({self.split}) with at most {self.max_n} N in {_MAX_DRAWS} draws "
            f"(item {i}); the genome is mostly N: raise max_n_fraction"
        )

    def locate(self, i: int) -> Window:
        """Where item i comes from (the same draws as ``self[i]``)."""
        return self._draw(i)[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        win, codes = self._draw(i)
        if win.reverse:
            codes = self.tokenizer.reverse_complement(codes)
        return torch.from_numpy(codes.astype(np.int64))


def _check_args(window, tokenizer, num_samples, seed, max_n_fraction, split, val_fraction) -> None:
    if not isinstance(tokenizer, NucleotideTokenizer):
        raise InputError(
            "GenomeWindowDataset needs a NucleotideTokenizer (N-skipping and reverse complement are per "
            f"base), got {type(tokenizer).__name__}"
        )
    if split not in ("train", "val", "all"):
        raise InputError(f"split={split!r}: use 'train', 'val' or 'all'")
    checks = [
        (isinstance(window, int) and window >= 1, f"window={window!r}: use a positive number of bases"),
        (num_samples >= 0, f"num_samples={num_samples}: use 0 or more"),
        (seed >= 0, f"seed={seed}: use a non-negative integer"),
        (0.0 <= max_n_fraction <= 1.0, f"max_n_fraction={max_n_fraction}: use a fraction in [0, 1]"),
        (0.0 <= val_fraction < 1.0, f"val_fraction={val_fraction}: use a fraction in [0, 1)"),
    ]
    for ok, msg in checks:
        if not ok:
            raise InputError(msg)


def tile_windows(
    path: str | os.PathLike,
    window: int,
    stride: int | None = None,
    tokenizer: NucleotideTokenizer | None = None,
) -> Iterator[tuple[str, int, int, torch.Tensor]]:
    """Cover every contig left to right: yields (contig, start, end, token ids int64 [end - start]).

    Windows start every ``stride`` bases (default ``window``: no overlap); the last window of a contig
    ends at the contig end and may be shorter. Streams the FASTA one record at a time (plain or gzip).
    """
    tokenizer = NucleotideTokenizer() if tokenizer is None else tokenizer
    stride = window if stride is None else stride
    if not isinstance(window, int) or window < 1:
        raise InputError(f"window={window!r}: use a positive number of bases")
    if not isinstance(stride, int) or not 1 <= stride <= window:
        raise InputError(f"stride={stride!r}: use 1..window ({window}) so the tiles cover every base")
    records = iter_fasta(path)
    return _tiles(records, window, stride, tokenizer, path)


def _tiles(records, window: int, stride: int, tokenizer, path) -> Iterator[tuple[str, int, int, torch.Tensor]]:
    for name, seq in records:
        codes = tokenizer.encode_codes(seq, source=f"record {name!r} of {path}")
        start = 0
        while True:
            end = min(start + window, len(codes))
            yield name, start, end, torch.from_numpy(codes[start:end].astype(np.int64))
            if end == len(codes):
                break
            start += stride
