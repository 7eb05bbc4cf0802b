"""Genomic intervals from BED files, and a dataset of their sequences cut from an indexed FASTA.

BED coordinates are 0-based half-open, the same as seqssm uses inside, so they are taken as they are.
:func:`read_bed` streams BED3 to BED6 (more columns are allowed and ignored unless one is the label)
and checks every line; :class:`IntervalDataset` turns intervals into strand-aware sequences with
optional fixed-length centring and seeded random shifts.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seqssm.datasets.batching import Record
from seqssm.datasets.fasta import FastaFile
from seqssm.datasets.tables import check_text, read_label_map, readable_text
from seqssm.errors import InputError
from seqssm.tokenizers import NucleotideTokenizer

_HEADER_PREFIXES = ("#", "track", "browser")


@dataclass(frozen=True, slots=True)
class Interval:
    """One BED line: [start, end) on ``contig``; ``source`` is ``file:line`` for error messages."""

    contig: str
    start: int
    end: int
    name: str | None = None
    score: float | None = None
    strand: str = "."
    label: str | None = None
    source: str = ""


def _int_field(text: str, what: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        msg = f"{where}: {what} {text!r} is not an integer; BED columns 2-3 are whole numbers"
        raise InputError(msg) from None


def _parse_line(fields: list[str], where: str, label_column: int | None, labels: dict | None) -> Interval:
    if len(fields) < 3:
        raise InputError(
            f"{where}: {len(fields)} column(s); BED needs at least contig, start, end (tab-separated)"
        )
    contig = fields[0]
    start = _int_field(fields[1], "start", where)
    end = _int_field(fields[2], "end", where)
    if start < 0:
        raise InputError(f"{where}: negative start {start}; BED starts are 0-based and >= 0")
    if end < start:
        raise InputError(f"{where}: end {end} < start {start}; BED intervals are [start, end), end >= start")
    name = fields[3] if len(fields) > 3 and fields[3] not in ("", ".") else None
    score = None
    if len(fields) > 4 and fields[4] not in ("", "."):
        try:
            score = float(fields[4])
        except ValueError:
            raise InputError(f"{where}: score {fields[4]!r} is not a number; use a number or '.'") from None
    strand = fields[5] if len(fields) > 5 else "."
    if strand not in ("+", "-", "."):
        raise InputError(f"{where}: strand {strand!r}; BED column 6 must be '+', '-' or '.'")
    label = None
    if label_column is not None:
        if label_column >= len(fields):
            raise InputError(
                f"{where}: {len(fields)} columns, no label column {label_column} (0-based); fix the line "
                "or --bed-labels"
            )
        label = fields[label_column]
    elif labels is not None:
        if name is None:
            raise InputError(
                f"{where}: no name (column 4) to look up in the label table; name every interval"
            )
        if name not in labels:
            raise InputError(f"{where}: name {name!r} is not in the label table; add it or drop the line")
        label = labels[name]
    return Interval(contig, start, end, name, score, strand, label, where)


def read_bed(
    path: str | os.PathLike,
    label_column: int | str | os.PathLike | None = None,
) -> Iterator[Interval]:
    """Stream the intervals of a BED file (plain or gzip), checking each line.

    Lines starting with ``#``, ``track`` or ``browser`` and blank lines are skipped. Columns are
    contig, start, end, then optional name, score and strand ('+', '-', '.').

    Args:
        path: the BED file.
        label_column: where each interval's label comes from: an int is a 0-based column index into
            the line (3 or more, e.g. 6 for a 7th column); a path is a table with ``name`` and ``label``
            columns joined on the BED name; None leaves labels None.

    Errors (:class:`InputError`, naming ``file:line``): fewer than 3 columns, a non-integer or
    negative coordinate, end < start, a bad strand or score, a missing label.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"BED file {path} does not exist; check the path")
    check_text(path, "BED file")
    labels = None
    column = None
    if isinstance(label_column, bool) or (isinstance(label_column, int) and label_column < 3):
        raise InputError(
            f"--bed-labels {label_column!r}: give a column index >= 3 (0-based) or a label table path "
            "(label_column= in Python)"
        )
    if isinstance(label_column, int):
        column = label_column
    elif label_column is not None:
        labels = read_label_map(label_column)
    return _intervals(path, column, labels)


def _intervals(path: Path, column: int | None, labels: dict | None) -> Iterator[Interval]:
    opener = gzip.open if path.suffix == ".gz" else open
    with readable_text(path), opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith(_HEADER_PREFIXES):
                continue
            fields = line.split("\t")
            if len(fields) < 3:
                # Some tools write space-separated BED; accept it when tabs give too few columns.
                fields = line.split()
            yield _parse_line(fields, f"{path}:{number}", column, labels)


class IntervalDataset(torch.utils.data.Dataset):
    """Sequences of BED intervals as :class:`~seqssm.datasets.batching.Record` items.

    Item i is ``Record(id, sequence, label)``: the id is the BED name, or ``contig:start-end`` in BED
    coordinates (``(-)`` appended on the minus strand, as ``bedtools getfasta -s`` names them). The
    sequence is text, or token ids int64 [L] when a tokenizer is given; minus-strand intervals are
    reverse-complemented.

    Args:
        bed: a BED path (read with :func:`read_bed`) or intervals already read.
        fasta: the genome, a path or a :class:`~seqssm.datasets.fasta.FastaFile`.
        tokenizer: turns text into ids (``tokenizer.encode``), or None to return text.
        length: a fixed output length: the window of this many bases centred on the interval's
            centre (trimming or extending it); bases beyond a contig end are N. None keeps each
            interval's own length.
        shift: random shift augmentation: the window moves by a uniform offset in [-shift, shift],
            drawn from a generator seeded by (seed, index), so item i is the same on every read;
            change ``seed`` (e.g. per epoch) for new draws.
        seed: see shift.
        label_column: passed to :func:`read_bed` when ``bed`` is a path.
    """

    def __init__(
        self,
        bed: str | os.PathLike | Iterable[Interval],
        fasta: str | os.PathLike | FastaFile,
        tokenizer=None,
        length: int | None = None,
        shift: int = 0,
        seed: int = 0,
        label_column: int | str | os.PathLike | None = None,
    ):
        if length is not None and length < 1:
            raise InputError(f"IntervalDataset: length={length}; give a positive number of bases or None")
        if shift < 0:
            raise InputError(f"IntervalDataset: shift={shift}; give 0 or more bases")
        self.fasta = fasta if isinstance(fasta, FastaFile) else FastaFile(fasta)
        source = read_bed(bed, label_column) if isinstance(bed, (str, os.PathLike)) else bed
        self.intervals = list(source)
        self.tokenizer = tokenizer
        self.length = length
        self.shift = shift
        self.seed = seed
        self._rc = NucleotideTokenizer().reverse_complement
        for iv in self.intervals:
            self._check(iv)

    def _check(self, iv: Interval) -> None:
        lengths = self.fasta.lengths
        where = iv.source or f"interval {iv.contig}:{iv.start}-{iv.end}"
        if iv.contig not in lengths:
            names = list(lengths)
            shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
            raise InputError(
                f"{where}: contig {iv.contig!r} is not in {self.fasta.path} (it has {shown}); "
                "use the FASTA the BED was made against"
            )
        if iv.end > lengths[iv.contig]:
            raise InputError(
                f"{where}: interval [{iv.start}, {iv.end}) runs past the end of {iv.contig} "
                f"(length {lengths[iv.contig]}); fix the line or use the matching FASTA"
            )

    def __len__(self) -> int:
        return len(self.intervals)

    def window(self, index: int) -> tuple[int, int]:
        """The [start, end) that item ``index`` reads (may reach past the contig ends)."""
        iv = self.intervals[index]
        start, end = iv.start, iv.end
        if self.length is not None:
            start = (iv.start + iv.end) // 2 - self.length // 2
            end = start + self.length
        if self.shift:
            offset = int(np.random.default_rng([self.seed, index]).integers(-self.shift, self.shift + 1))
            start, end = start + offset, end + offset
        return start, end

    def _fetch_padded(self, contig: str, start: int, end: int) -> str:
        size = self.fasta.lengths[contig]
        lo, hi = min(max(start, 0), size), max(min(end, size), 0)
        inside = self.fasta.fetch(contig, lo, hi) if lo < hi else ""
        left = min(max(-start, 0), end - start)
        return "N" * left + inside + "N" * (end - start - left - len(inside))

    def __getitem__(self, index: int) -> Record:
        iv = self.intervals[index]
        start, end = self.window(index)
        seq = self._fetch_padded(iv.contig, start, end)
        if iv.strand == "-":
            seq = self._rc(seq)
        record_id = iv.name or f"{iv.contig}:{iv.start}-{iv.end}" + ("(-)" if iv.strand == "-" else "")
        if self.tokenizer is not None:
            seq = torch.from_numpy(np.asarray(self.tokenizer.encode(seq), dtype=np.int64))
        return Record(record_id, seq, iv.label)
