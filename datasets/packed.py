"""Variable-length DNA records packed into rows of one length: pretraining without padding (``pretrain --pack``).

The records are every record of a FASTA (plain, gzip or bgzip) or every primary read of a SAM/BAM file. A
record no longer than the row is one sequence; a longer one is cut into row-length pieces, the last one ending
at the record's end (each epoch cuts at a fresh random phase, so the cuts move). The pieces of an epoch are
shuffled and placed end to end, each in the first of the last ``OPEN_ROWS`` unfilled rows it fits in, else
in a new row (first fit over a window), the tail of each row padding. A row comes with ``seq_idx`` (which
sequence each position belongs to, -1 on padding), so the model runs every sequence as if alone
(``seqssm.models.packing``) and no sequence sees another's context.

Split: whole records are held out for validation, about ``val_fraction`` of the bases: records in the order of
a hash of their names (a read's mates stay together; the seed does not move the split), each taken while it
fits in that share, at least one, never the last. The rows of an epoch are a pure function of (seed, epoch),
so a resumed run trains on the rows it has not seen.

Shapes: R the row length, P pieces.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from seqssm.datasets.fasta import iter_fasta
from seqssm.datasets.sniff import read_head
from seqssm.errors import InputError
from seqssm.tokenizers import NucleotideTokenizer

MAX_BASES = 256_000_000  # records are held in memory as one byte a base
OPEN_ROWS = 16  # rows still open to a short piece: first fit among them packs short reads almost without gaps


@dataclass(frozen=True)
class Records:
    """The records of one file, tokenised: names and uint8 token codes, in file order."""

    path: str
    names: list[str]
    codes: list[np.ndarray]

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(c) for c in self.codes], dtype=np.int64)


def _is_alignment(path: Path) -> bool:
    head = read_head(path, 4)  # BAM is BGZF: its magic appears after decompression
    return head.startswith((b"BAM\x01", b"CRAM")) or path.suffix.lower() == ".sam"


def read_records(path: str | os.PathLike, tokenizer: NucleotideTokenizer, flag: str = "DATA") -> Records:
    """Every record of a FASTA, or every primary read of a SAM/BAM (as sequenced), tokenised; InputError when
    there are none or more than ``MAX_BASES`` bases."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{flag} {path} does not exist; give a FASTA or a BAM of reads")
    names, codes, total = [], [], 0
    if _is_alignment(path):
        from seqssm.datasets.reads import iter_reads  # pysam only for alignments

        if read_head(path, 4).startswith(b"CRAM"):
            raise InputError(f"{path} is CRAM, which needs its reference to decode; convert it to BAM "
                             "(`samtools view -b -T ref.fa`) for --pack")
        source = ((r.name, r.sequence) for r in iter_reads(path, primary_only=True, original_strand=True))
    else:
        source = iter_fasta(path)
    for name, seq in source:
        total += len(seq)
        if total > MAX_BASES:
            raise InputError(f"{path} holds more than {MAX_BASES} bases, more than --pack keeps in memory; pack a "
                             "subset, or drop --pack to draw windows from the file")
        names.append(name)
        codes.append(tokenizer.encode_codes(seq, source=f"record {name!r} of {path}"))
    if not names:
        raise InputError(f"{path} holds no reads with a sequence; give a FASTA or a BAM of reads")
    return Records(str(path), names, codes)


def split_records(records: Records, val_fraction: float) -> tuple[list[int], list[int]]:
    """(train, val) record indices: whole records, about ``val_fraction`` of the bases held out (see the module
    docstring); InputError when the file has one record or ``val_fraction`` is 0."""
    n = len(records.names)
    if n < 2:
        raise InputError(f"{records.path} holds 1 record, and --pack holds out whole records for validation: give "
                         "a file of several records, or drop --pack to draw windows from this one")
    if val_fraction <= 0:
        raise InputError("--val-fraction 0 leaves no record to validate on with --pack; give a fraction above 0")
    lengths = records.lengths
    target = val_fraction * lengths.sum()
    order = sorted(range(n), key=lambda i: (zlib.crc32(records.names[i].encode()), i))
    val, used = [], 0
    for i in order:
        if used + lengths[i] <= target and len(val) < n - 1:
            val.append(i)
            used += lengths[i]
    if not val:
        val = [min(order, key=lambda i: lengths[i])]
    held = set(val)
    return [i for i in range(n) if i not in held], sorted(val)


@dataclass(frozen=True)
class _Layout:
    """One epoch's rows: pieces [P] in row order (record, start, length, reverse) and row_starts [rows + 1],
    where each row's pieces begin."""

    record: np.ndarray
    start: np.ndarray
    length: np.ndarray
    reverse: np.ndarray
    row_starts: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.row_starts) - 1


class PackedRecords(Dataset):
    """Rows of ``row_length`` token ids packed from the records ``keep`` of ``records``: item i is
    (ids int64 [R], seq_idx int32 [R]), ``pad_id`` and -1 past the row's last sequence.

    ``num_rows`` rows in all, epoch after epoch (None: one epoch's). Pieces shorter than ``min_length`` (2 for a
    next-token objective: one target) and pieces with more than ``max_n_fraction`` N are left out. With
    ``both_strands`` a piece is reverse-complemented with probability 1/2. ``shuffle`` and ``random_cuts``
    (False: one fixed layout, for validation) draw from (seed, epoch).
    """

    def __init__(self, records: Records, keep: list[int], row_length: int, tokenizer: NucleotideTokenizer, *,
                 num_rows: int | None = None, seed: int = 0, min_length: int = 1, max_n_fraction: float = 0.5,
                 both_strands: bool = True, random_cuts: bool = True, split: str = "train"):
        self.records, self.keep, self.row_length, self.tokenizer = records, list(keep), row_length, tokenizer
        self.seed, self.min_length, self.max_n_fraction = seed, min_length, max_n_fraction
        self.both_strands, self.random_cuts = both_strands, random_cuts
        self._lengths = records.lengths[self.keep]
        self._n_count = np.array([np.count_nonzero(c == tokenizer.n_id) for c in records.codes], dtype=np.int64)
        self._layouts: list[_Layout] = [self._layout(0)]
        if self._layouts[0].rows == 0:
            raise InputError(f"the {split} records of {records.path} give no piece of at least {min_length} "
                             f"bases with at most {max_n_fraction:.0%} N; check the file")
        self.num_rows = self._layouts[0].rows if num_rows is None else num_rows
        while sum(layout.rows for layout in self._layouts) < self.num_rows:
            self._layouts.append(self._layout(len(self._layouts)))
        self._first_row = np.cumsum([0] + [layout.rows for layout in self._layouts])
        self._real = np.concatenate([np.add.reduceat(lay.length, lay.row_starts[:-1]) for lay in self._layouts])

    def _layout(self, epoch: int) -> _Layout:
        rng = np.random.default_rng([self.seed, epoch])
        R = self.row_length
        keep = np.asarray(self.keep, dtype=np.int64)
        phases = rng.integers(0, R, size=len(keep)) if self.random_cuts else np.zeros(len(keep), np.int64)
        sizes = self._lengths
        whole = sizes <= R  # one piece each, vectorised: most reads
        record, start, length = [keep[whole]], [np.zeros(int(whole.sum()), np.int64)], [sizes[whole]]
        for r, n, phase in zip(keep[~whole], sizes[~whole], phases[~whole], strict=True):
            cuts = np.unique(np.r_[0, np.arange(phase, n, R), n])
            record.append(np.full(len(cuts) - 1, r))
            start.append(cuts[:-1])
            length.append(np.diff(cuts))
        record, start, length = (np.concatenate(a).astype(np.int64) for a in (record, start, length))
        ok = length >= self.min_length
        n_id = self.tokenizer.n_id
        for p in np.flatnonzero(ok & (self._n_count[record] > 0)):  # only records with an N need counting
            piece = self.records.codes[record[p]][start[p]:start[p] + length[p]]
            ok[p] = np.count_nonzero(piece == n_id) <= self.max_n_fraction * length[p]
        order = rng.permutation(len(record))
        order = order[ok[order]]
        reverse = (rng.random(len(record)) < 0.5) & self.both_strands
        rows: list[list[int]] = []
        open_rows: list[list[int]] = []  # [row, positions used] of the last OPEN_ROWS rows not yet full
        for p in order.tolist():  # first fit among the open rows, else a new row
            k = int(length[p])
            slot = next((o for o in open_rows if o[1] + k <= R), None)
            if slot is None:
                rows.append([])
                slot = [len(rows) - 1, 0]
                open_rows.append(slot)
                if len(open_rows) > OPEN_ROWS:
                    open_rows.pop(0)
            rows[slot[0]].append(p)
            slot[1] += k
            if slot[1] == R:
                open_rows.remove(slot)
        flat = np.array([p for row in rows for p in row], dtype=np.int64)
        row_starts = np.cumsum([0] + [len(row) for row in rows]).astype(np.int64)
        return _Layout(record[flat], start[flat], length[flat], reverse[flat], row_starts)

    def __len__(self) -> int:
        return self.num_rows

    def efficiency(self, rows: int | None = None) -> float:
        """Real tokens / row positions over the first ``rows`` rows (default all)."""
        rows = self.num_rows if rows is None else min(rows, self.num_rows)
        return float(self._real[:rows].sum() / max(rows * self.row_length, 1))

    def stats(self, rows: int | None = None, batch_size: int | None = None) -> dict:
        """For run.json, over the first ``rows`` rows (default all): records, rows, sequences, ``efficiency`` (real
        tokens / row positions) and, with ``batch_size``, ``forward_efficiency``: real tokens / the positions the
        packed forward runs, which pads each batch's sequences to its longest (``seqssm.models.packing``)."""
        rows = self.num_rows if rows is None else min(rows, self.num_rows)
        lengths = []  # per row, its pieces' lengths
        for lay in self._layouts:
            take = min(lay.rows, rows - len(lengths))
            lengths += [lay.length[lay.row_starts[r]:lay.row_starts[r + 1]] for r in range(take)]
        pieces = sum(len(k) for k in lengths)
        record = {"records": len(self.keep), "bases": int(self.records.lengths[self.keep].sum()), "rows": rows,
                  "row_length": self.row_length, "sequences": pieces,
                  "sequences_per_row": round(pieces / max(rows, 1), 3), "efficiency": round(self.efficiency(rows), 4)}
        if batch_size:
            run = sum(sum(len(k) for k in batch) * max(int(k.max()) for k in batch)
                      for batch in (lengths[b:b + batch_size] for b in range(0, rows, batch_size)))
            record["forward_efficiency"] = round(float(self._real[:rows].sum()) / max(run, 1), 4)
        return record

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.num_rows:
            raise IndexError(f"row {i} out of range for {self.num_rows} rows")
        epoch = int(np.searchsorted(self._first_row, i, side="right")) - 1
        lay, row = self._layouts[epoch], i - int(self._first_row[epoch])
        ids = np.full(self.row_length, self.tokenizer.pad_id, dtype=np.int64)
        seq_idx = np.full(self.row_length, -1, dtype=np.int32)
        col = 0
        for j, p in enumerate(range(lay.row_starts[row], lay.row_starts[row + 1])):
            s, k = int(lay.start[p]), int(lay.length[p])
            codes = self.records.codes[int(lay.record[p])][s:s + k]
            ids[col:col + k] = self.tokenizer.reverse_complement(codes) if lay.reverse[p] else codes
            seq_idx[col:col + k] = j
            col += k
        return torch.from_numpy(ids), torch.from_numpy(seq_idx)
