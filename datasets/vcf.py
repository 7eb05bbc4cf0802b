"""Variants from VCF/BCF files (pysam ``VariantFile``), the windows of reference and alternate sequence
around each, and a reference genome readable by region whatever its compression.

Coordinates are 0-based half-open inside (a VCF's POS 10 is ``start`` 9), as everywhere in seqssm.
:func:`iter_variants` streams the records of a VCF and says, per record, why it cannot be scored (a contig
the genome lacks, a REF that differs from the genome) and, per ALT, whether the allele is symbolic; it never
stops on such a record. Only a file that is no VCF, or a record htslib cannot parse, is an InputError.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pysam

from seqssm.datasets.fasta import FastaFile, FastaStream, sniff_compression
from seqssm.datasets.sniff import binary_kind, read_head
from seqssm.errors import InputError, require_file

# Why a record is not scored (the keys of the counts a run reports).
MISSING_CONTIG, REF_MISMATCH, SYMBOLIC, UNSORTED = "missing_contig", "ref_mismatch", "symbolic", "unsorted"
_BASES = re.compile(r"[ACGTNacgtn]+")


def is_symbolic(allele: str | None) -> bool:
    """True for an ALT that is no sequence of bases: ``<DEL>``-style IDs, ``*`` (overlapping deletion), ``.``
    (no ALT), breakends (``G]17:198982]``) and single breakends (``.A``, ``A.``)."""
    return allele is None or _BASES.fullmatch(allele) is None


@dataclass(frozen=True, slots=True)
class Variant:
    """One VCF record: ``start`` 0-based (POS - 1), ``ref`` and every ``alts`` as written, ``line`` the record
    as VCF text (no newline). ``skip``: why the record is not scored (None: scored), ``symbolic[i]``: ALT i is
    a symbolic allele (no score for it)."""

    contig: str
    start: int
    id: str | None
    ref: str
    alts: tuple[str, ...]
    line: str
    skip: str | None
    symbolic: tuple[bool, ...]

    @property
    def pos(self) -> int:
        """The 1-based POS, as the VCF writes it."""
        return self.start + 1


class ReferenceGenome:
    """Region access to a FASTA of any compression: an indexed :class:`FastaFile` for plain or bgzip files;
    for plain gzip (which cannot be indexed) one contig at a time is read front to back into memory, so
    regions should come contig by contig (a sorted VCF does)."""

    def __init__(self, path: str | os.PathLike):
        self.path = require_file(path, "genome FASTA (--genome)")
        self._indexed = sniff_compression(self.path) != "gzip"
        self._fasta = FastaFile(self.path) if self._indexed else FastaStream(self.path)
        self.contigs, self.lengths = self._fasta.contigs, self._fasta.lengths
        self._held: tuple[str, str] | None = None

    def fetch(self, contig: str, start: int, end: int) -> str:
        """Bases of [start, end) of ``contig``, uppercase or not as in the file."""
        if self._indexed:
            return self._fasta.fetch(contig, start, end)
        if self._held is None or self._held[0] != contig:
            self._held = None  # free the last contig before reading the next
            self._held = (contig, self._fasta.fetch(contig))
        return self._held[1][start:end]

    def close(self) -> None:
        self._held = None
        self._fasta.close()


def open_vcf(path: str | os.PathLike) -> pysam.VariantFile:
    """A VCF or BCF (plain, gzip or bgzip) opened with pysam; InputError when it is missing or no VCF."""
    path = require_file(path, "VCF file")
    if path.stat().st_size == 0:
        raise InputError(f"VCF file {path} is empty (0 bytes); give a VCF with a header and records")
    head = read_head(path)
    kind = binary_kind(head)
    if kind is not None and kind != "a BCF file":
        raise InputError(f"VCF file {path} is {kind}, not VCF text; give a .vcf, .vcf.gz or .bcf file")
    if kind is None and not head.startswith(b"##fileformat=VCF"):
        first = head.split(b"\n", 1)[0][:30].decode("latin-1")
        raise InputError(f"VCF file {path} is not VCF: it starts with {first!r}, not '##fileformat=VCF'; give a "
                         ".vcf, .vcf.gz or .bcf file")
    with _quiet_htslib():
        try:
            return pysam.VariantFile(str(path))
        except (OSError, ValueError) as err:
            raise InputError(f"VCF file {path} cannot be read ({err}); check the file") from None


@contextlib.contextmanager
def _quiet_htslib():
    """htslib's own warnings (a contig missing from the header, ...) off: what matters is counted and reported."""
    previous = pysam.set_verbosity(0)
    try:
        yield
    finally:
        pysam.set_verbosity(previous)


def iter_variants(vcf: pysam.VariantFile, genome: ReferenceGenome, path: str | os.PathLike = "") -> Iterator[Variant]:
    """The records of ``vcf`` in file order, each checked against ``genome``.

    ``skip`` is MISSING_CONTIG, REF_MISMATCH (the genome's bases differ from REF, case ignored; N in either
    matches anything), SYMBOLIC (no ALT is a sequence) or UNSORTED (a record before the previous one, or
    its contig back after another: the output could not be indexed) - and None for a record to score.
    """
    seen: dict[str, int] = {}
    last: tuple[str, int] | None = None
    with _quiet_htslib():
        records = iter(vcf)
        number = 0
        while True:
            try:
                rec = next(records)
            except StopIteration:
                return
            except (OSError, ValueError) as err:
                raise InputError(f"VCF file {path}: record {number + 1} cannot be parsed ({err}); check that "
                                 "line (POS must be a number, fields tab-separated)") from None
            number += 1
            contig, start, ref = rec.contig, rec.start, rec.ref or ""
            alts = tuple(rec.alts or ())
            symbolic = tuple(is_symbolic(a) for a in alts) or (True,)
            skip = None
            if last is not None and (contig != last[0] and contig in seen or contig == last[0] and start < last[1]):
                skip = UNSORTED
            else:
                seen.setdefault(contig, len(seen))
                last = (contig, start)
            if skip is None and contig not in genome.lengths:
                skip = MISSING_CONTIG
            elif skip is None and not _matches(genome, contig, start, ref):
                skip = REF_MISMATCH
            elif skip is None and all(symbolic):
                skip = SYMBOLIC
            yield Variant(contig, start, rec.id, ref, alts or (".",), str(rec).rstrip("\n"), skip, symbolic)


def _matches(genome: ReferenceGenome, contig: str, start: int, ref: str) -> bool:
    if not ref or _BASES.fullmatch(ref) is None or start + len(ref) > genome.lengths[contig]:
        return False
    have = genome.fetch(contig, start, start + len(ref)).upper()
    return all(a == b or "N" in (a, b) for a, b in zip(have, ref.upper(), strict=True))


def variant_window(genome: ReferenceGenome, variant: Variant, alt: str, window: int) -> tuple[int, int, str, str]:
    """(start, end, ref_seq, alt_seq): the reference window [start, end) of about ``window`` bases centred
    on REF, and the same window with REF replaced by ``alt``. Both share the flanks exactly; near a contig end
    the window is clipped there, so it may be shorter."""
    length = genome.lengths[variant.contig]
    flank = max(window - len(variant.ref), 0)
    start = max(variant.start - flank // 2, 0)
    end = min(variant.start + len(variant.ref) + flank - flank // 2, length)
    left = genome.fetch(variant.contig, start, variant.start)
    ref = genome.fetch(variant.contig, variant.start, variant.start + len(variant.ref))
    right = genome.fetch(variant.contig, variant.start + len(variant.ref), end)
    return start, end, left + ref + right, left + alt + right


def header_with_info(vcf: pysam.VariantFile, lines: list[str]) -> str:
    """The VCF header text of ``vcf`` with ``lines`` (``##INFO=<...>``) added before the ``#CHROM`` line."""
    text = str(vcf.header)
    at = text.rfind("#CHROM")
    return text[:at] + "".join(line + "\n" for line in lines) + text[at:]


def with_info(line: str, fields: dict[str, str]) -> str:
    """VCF record ``line`` with ``fields`` (key -> value text) added to its INFO column."""
    columns = line.split("\t")
    extra = ";".join(f"{k}={v}" for k, v in fields.items())
    if extra:
        columns[7] = extra if columns[7] in (".", "") else f"{columns[7]};{extra}"
    return "\t".join(columns)


def vcf_suffix_ok(path: str | os.PathLike) -> bool:
    return Path(path).name.endswith(".vcf.gz")
