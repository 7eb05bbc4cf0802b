"""Sequencing reads from SAM, BAM and CRAM files, streamed through pysam.

:func:`iter_reads` yields one :class:`Read` per alignment record, reading the file record by record
(``until_eof`` when there is no region), so unsorted, unindexed and unmapped BAMs work and a file is
never loaded whole. Reads of any length come through: a 1 Mbp nanopore-style read is one record.

Coordinates are 0-based half-open, as pysam reports them; a region is ``(contig, start, end)`` in the
same convention, or a bare contig name.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import pysam

from seqssm.errors import InputError

log = logging.getLogger(__name__)

Region = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class Read:
    """One alignment record.

    ``sequence`` is as stored in the file (the reference's forward strand for reverse-mapped reads)
    unless :func:`iter_reads` was asked for ``original_strand``, in which case it is the read as
    sequenced. ``contig``, ``start`` and ``end`` are None for unmapped reads.
    """

    name: str
    sequence: str
    contig: str | None
    start: int | None
    end: int | None
    is_reverse: bool
    mapping_quality: int
    flag: int


class ReadIterator:
    """Iterator over the :class:`Read` records of one file; see :func:`iter_reads`.

    ``skipped`` counts the records left out, by reason: ``unmapped``, ``not_primary``, ``low_mapq``
    and ``no_sequence`` (SEQ ``*``, typical of secondary alignments). ``yielded`` counts the rest.
    The file is closed when the iterator is exhausted, on :meth:`close`, or on leaving a ``with``.
    """

    def __init__(
        self,
        handle: pysam.AlignmentFile,
        region: Region | str | None,
        mapped_only: bool,
        min_mapq: int,
        primary_only: bool,
        original_strand: bool,
    ):
        self.path = handle.filename.decode() if isinstance(handle.filename, bytes) else str(handle.filename)
        self.skipped: Counter[str] = Counter()
        self.yielded = 0
        self._handle = handle
        if region is None:
            records = handle.fetch(until_eof=True)
        elif isinstance(region, str):
            records = handle.fetch(region)
        else:
            records = handle.fetch(region[0], int(region[1]), int(region[2]))
        self._reads = self._filter(records, mapped_only, min_mapq, primary_only, original_strand)

    def _filter(self, records, mapped_only, min_mapq, primary_only, original_strand) -> Iterator[Read]:
        for rec in records:
            if rec.is_unmapped and (mapped_only or min_mapq > 0):
                self.skipped["unmapped"] += 1
                continue
            if primary_only and (rec.is_secondary or rec.is_supplementary):
                self.skipped["not_primary"] += 1
                continue
            if rec.mapping_quality < min_mapq:
                self.skipped["low_mapq"] += 1
                continue
            if rec.query_sequence is None:
                self.skipped["no_sequence"] += 1
                continue
            unmapped = rec.is_unmapped
            self.yielded += 1
            yield Read(
                name=rec.query_name,
                sequence=rec.get_forward_sequence() if original_strand else rec.query_sequence,
                contig=None if unmapped else rec.reference_name,
                start=None if unmapped else rec.reference_start,
                end=None if unmapped else rec.reference_end,
                is_reverse=rec.is_reverse,
                mapping_quality=rec.mapping_quality,
                flag=rec.flag,
            )

    def __iter__(self) -> ReadIterator:
        return self

    def __next__(self) -> Read:
        try:
            return next(self._reads)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        if self._handle.is_open:
            if self.skipped["no_sequence"]:
                n = self.skipped["no_sequence"]
                log.info("%s: skipped %d records with no stored sequence", self.path, n)
            self._handle.close()

    def __enter__(self) -> ReadIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_cram(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"CRAM"


def _check_region(handle: pysam.AlignmentFile, path: Path, region: Region | str) -> None:
    contig = region if isinstance(region, str) else region[0]
    if contig not in handle.references:
        names = ", ".join(handle.references[:5]) + (", …" if len(handle.references) > 5 else "")
        raise InputError(
            f"{path}: region contig {contig!r} is not in the header (contigs: {names}); "
            "give a contig name or a 0-based half-open (contig, start, end)"
        )
    if isinstance(region, str):
        return
    if len(region) != 3:
        raise InputError(f"{path}: region {region!r} must be a contig name or (contig, start, end)")
    _, start, end = region
    if not (isinstance(start, Integral) and isinstance(end, Integral)) or start < 0 or end < start:
        raise InputError(
            f"{path}: region {region!r} needs integers 0 <= start <= end (0-based half-open)"
        )


def iter_reads(
    path: str | os.PathLike,
    region: Region | str | None = None,
    reference: str | os.PathLike | None = None,
    mapped_only: bool = False,
    min_mapq: int = 0,
    primary_only: bool = False,
    original_strand: bool = False,
) -> ReadIterator:
    """Stream the reads of a SAM, BAM or CRAM file.

    Args:
        path: the alignment file; the format is recognised from its content.
        region: only reads overlapping this region: a contig name or ``(contig, start, end)``,
            0-based half-open. Needs an index beside the file (``.bai``/``.csi``, ``.crai`` for CRAM).
            None reads the whole file in file order, index or not.
        reference: FASTA the CRAM was compressed against (needed for CRAM, ignored otherwise).
        mapped_only: leave out unmapped reads.
        min_mapq: leave out reads with a lower mapping quality (unmapped reads too, when > 0).
        primary_only: leave out secondary and supplementary alignments.
        original_strand: give reads mapped to the reverse strand reverse-complemented back to the
            orientation they were sequenced in (SAM stores them as the reference's forward strand).

    Returns:
        A :class:`ReadIterator` of :class:`Read`; records without a stored sequence are skipped and
        counted in its ``skipped`` counter.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"alignment file {path} does not exist; give a SAM, BAM or CRAM path")
    if min_mapq < 0:
        raise InputError(f"min_mapq={min_mapq} is negative; give 0 or more")
    if path.stat().st_size == 0:
        raise InputError(f"alignment file {path} is empty (0 bytes); give a SAM, BAM or CRAM file")
    kwargs = {}
    if _is_cram(path):
        if reference is None:
            raise InputError(
                f"{path} is a CRAM file; pass --reference, the FASTA it was compressed against (reference= in "
                "Python)"
            )
        if not Path(reference).is_file():
            raise InputError(
                f"CRAM reference {reference} does not exist; give the FASTA {path} was made with"
            )
        kwargs["reference_filename"] = str(reference)
    try:
        handle = pysam.AlignmentFile(str(path), "r", check_sq=False, **kwargs)
    except (ValueError, OSError) as err:
        raise InputError(f"{path} cannot be read as SAM/BAM/CRAM ({err}); check the file") from err
    try:
        if not (handle.is_bam or handle.is_sam or handle.is_cram):
            # htslib also reads FASTA and FASTQ as unaligned reads; a file named .bam holding those is a mix-up.
            raise InputError(f"{path} holds {handle.description or 'something else'}, not SAM/BAM/CRAM; pass an "
                             "alignment file (a FASTA goes in as FASTA, named .fa)")
        if region is not None:
            if not handle.has_index():
                kind = ".crai" if handle.is_cram else ".bai/.csi"
                raise InputError(
                    f"{path} has no index ({kind}); run `samtools index {path}` or drop the region"
                )
            _check_region(handle, path, region)
        return ReadIterator(handle, region, mapped_only, min_mapq, primary_only, original_strand)
    except BaseException:
        handle.close()
        raise
