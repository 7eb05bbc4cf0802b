"""FASTA input: random access by region (pysam, indexed) and streaming of whole records (Biopython).

Random access needs a plain or bgzip-compressed FASTA and its ``.fai`` (plus ``.gzi`` for bgzip). A
missing index is built beside the FASTA, or, when that folder is read-only, in the user cache
(``$SEQSSM_CACHE`` or ``~/.cache/seqssm``) under a name keyed by the FASTA's absolute path, size and
mtime, so a changed file never meets a stale index. Plain gzip cannot be indexed: :func:`iter_fasta` streams
its records whole and :class:`FastaStream` reads regions of one front to back in constant memory.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path

import pysam

from seqssm.datasets.sniff import binary_kind, read_head
from seqssm.errors import InputError, require_file

_GZIP_MAGIC = b"\x1f\x8b"


def cache_dir() -> Path:
    """Where seqssm keeps derived files (FASTA indexes): ``$SEQSSM_CACHE`` or ``~/.cache/seqssm``."""
    return Path(os.environ.get("SEQSSM_CACHE") or Path.home() / ".cache" / "seqssm")


def sniff_compression(path: str | os.PathLike) -> str:
    """"plain", "gzip" or "bgzip", from the magic bytes (never the extension); InputError if unreadable."""
    path = require_file(path, "FASTA file")
    with open(path, "rb") as fh:
        head = fh.read(18)
    if not head.startswith(_GZIP_MAGIC):
        return "plain"
    # BGZF is gzip with an extra field (FLG.FEXTRA) whose first subfield is "BC" (SAM spec, section 4.1).
    if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC":
        return "bgzip"
    return "gzip"



def _open_text(path: Path):
    if sniff_compression(path) == "plain":
        return open(path, encoding="ascii", errors="surrogateescape", newline=None)
    return gzip.open(path, "rt", encoding="ascii", errors="surrogateescape")


@contextlib.contextmanager
def _corrupt_gzip_is_input_error(path: Path) -> Iterator[None]:
    try:
        yield
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise InputError(
            f"{path} is a truncated or corrupt gzip file ({err}); re-download or re-compress it"
        ) from None


def _check_starts_like_fasta(path: Path, handle) -> None:
    """The file must be text whose first non-blank line opens a '>' header; reads only the start of it."""
    kind = binary_kind(read_head(path))
    if kind is not None:
        raise InputError(f"{path} is {kind}, not FASTA text; pass a FASTA file (a '>' header line, then bases)")
    skipped = 0
    while True:
        chunk = handle.read(1 << 16)
        if not chunk:
            raise InputError(f"{path} is empty (no FASTA records); pass a FASTA file with a '>' record")
        text = chunk.lstrip()
        if text:
            break
        skipped += chunk.count("\n")
    if not text.startswith(">"):
        lineno = skipped + chunk[: len(chunk) - len(text)].count("\n") + 1
        first = text.split("\n", 1)[0][:20]
        raise InputError(f"{path} is not FASTA: line {lineno} starts with {first!r}, expected a '>' header")


def iter_fasta(path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """Stream a plain or gzip (or bgzip) multi-FASTA: yields (name, sequence) per record.

    ``name`` is the header up to the first whitespace (the convention of samtools and pysam); the sequence
    keeps its case (lowercase = soft-masked). The path and the start of the file are checked at the call;
    errors found while reading name the path and, where useful, the record. A record without bases, one
    without a name and a name used twice are errors.
    """
    path = require_file(path, "FASTA file")
    with _corrupt_gzip_is_input_error(path), _open_text(path) as handle:
        _check_starts_like_fasta(path, handle)
    return _records(path)


def _records(path: Path) -> Iterator[tuple[str, str]]:
    from Bio.SeqIO.FastaIO import SimpleFastaParser  # 0.17 s of imports that indexed access never needs

    names = _NameCheck(path)
    with _corrupt_gzip_is_input_error(path), _open_text(path) as handle:
        for number, (title, seq) in enumerate(SimpleFastaParser(handle), start=1):
            name = names.add(title, number)
            if not seq:
                raise _no_sequence(path, name, number)
            yield name, seq


class _NameCheck:
    """Record names as samtools reads them (the header up to the first whitespace), each once: a second record
    of one name would be dropped by an index (samtools keeps the first) or be told apart from the first by
    nothing in an output keyed by name."""

    def __init__(self, path: Path):
        self.path, self.seen = path, {}

    def add(self, title: str, number: int) -> str:
        name = title.split(None, 1)[0] if title.strip() else ""
        if not name:
            raise InputError(f"{self.path}: record {number} has an empty header line; give it a name")
        first = self.seen.setdefault(name, number)
        if first != number:
            raise InputError(f"{self.path}: record name {name!r} appears twice (records {first} and {number}); "
                             "record names must be unique: rename or remove one")
        return name


def _writable_dir(folder: Path) -> bool:
    """Writable for us and meant to be: root passes os.access everywhere, so honour the mode bits too."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _fresh(index: Path, fasta_mtime: float) -> bool:
    return index.is_file() and index.stat().st_mtime >= fasta_mtime


def _index_paths(path: Path, bgzip: bool) -> tuple[Path, Path | None]:
    """Existing fresh index beside or in the cache; else build one (beside if writable, else in the cache)."""
    st = path.stat()
    beside = (Path(f"{path}.fai"), Path(f"{path}.gzi") if bgzip else None)
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    stem = cache_dir() / "fai" / f"{key}-{path.name}"
    cached = (Path(f"{stem}.fai"), Path(f"{stem}.gzi") if bgzip else None)

    for fai, gzi in (beside, cached):
        if _fresh(fai, st.st_mtime) and (gzi is None or _fresh(gzi, st.st_mtime)):
            return fai, gzi
    if _writable_dir(path.parent) and not any(p is not None and p.exists() for p in beside):
        target = beside
    else:
        target = cached
        target[0].parent.mkdir(parents=True, exist_ok=True)
    _build_index(path, *target)
    _check_unique_names(path, bgzip, *target)
    return target


def _check_unique_names(path: Path, bgzip: bool, fai: Path, gzi: Path | None) -> None:
    """After a fresh index: InputError naming the first record name used twice, since samtools faidx indexes
    the first record of a name and silently drops the others. Counts headers at disk speed against the
    index's lines and reads the names only when they differ; the index is removed then, so that the next
    run checks again."""
    headers, last = 0, b"\n"
    with _corrupt_gzip_is_input_error(path), (gzip.open(path, "rb") if bgzip else open(path, "rb")) as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            headers += block.count(b"\n>") + (last == b"\n" and block[:1] == b">")
            last = block[-1:]
    with open(fai, "rb") as fh:
        indexed = sum(1 for line in fh if line.strip())
    if headers == indexed:
        return
    for index in (fai, gzi):
        if index is not None:
            index.unlink(missing_ok=True)
    check = _NameCheck(path)
    with _corrupt_gzip_is_input_error(path), _open_text(path) as handle:
        number = 0
        for line in handle:
            if line.startswith(">"):
                number += 1
                check.add(line[1:], number)
    raise InputError(f"{path} has {headers} '>' header lines but samtools faidx indexed {indexed} records; "
                     "check the headers")


def _build_index(path: Path, fai: Path, gzi: Path | None) -> None:
    """samtools faidx into temporary names, then rename: a concurrent reader never sees half an index."""
    tmp_fai = fai.with_name(f".{fai.name}.{os.getpid()}.tmp")
    tmp_gzi = gzi.with_name(f".{gzi.name}.{os.getpid()}.tmp") if gzi is not None else None
    args = [str(path), "--fai-idx", str(tmp_fai)]
    if tmp_gzi is not None:
        args += ["--gzi-idx", str(tmp_gzi)]
    try:
        pysam.faidx(*args)
        if tmp_gzi is not None:
            os.replace(tmp_gzi, gzi)
        os.replace(tmp_fai, fai)
    except pysam.SamtoolsError:
        raise InputError(
            f"samtools faidx cannot index {path} (htslib printed why above; usually a record's lines "
            "differ in length); rewrap it (e.g. `seqkit seq -w 60`) or stream it with iter_fasta"
        ) from None
    except OSError as err:
        msg = f"cannot write an index of {path} in {fai.parent}: {err}; set SEQSSM_CACHE to a writable folder"
        raise InputError(msg) from None
    finally:
        for tmp in (tmp_fai, tmp_gzi):
            if tmp is not None and tmp.exists():
                tmp.unlink()


class FastaFile:
    """Random access to a plain or bgzip FASTA by 0-based half-open region.

    The pysam handle is opened lazily per process, so the object can be pickled into DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = require_file(path, "FASTA file")
        kind = sniff_compression(self.path)
        if kind == "gzip":
            raise InputError(
                f"{self.path} is gzip but not bgzip; recompress with `bgzip` (zcat in.fa.gz | bgzip > out.fa.gz) "
                "or decompress it: plain gzip cannot be indexed for random access, only read by streaming"
            )
        with _corrupt_gzip_is_input_error(self.path), _open_text(self.path) as handle:
            _check_starts_like_fasta(self.path, handle)
        self.fai, self.gzi = _index_paths(self.path, bgzip=kind == "bgzip")
        self._handle: pysam.FastaFile | None = None
        self._pid: int | None = None
        fa = self._fasta()
        self.contigs: tuple[str, ...] = tuple(fa.references)
        self.lengths: dict[str, int] = dict(zip(fa.references, fa.lengths, strict=True))

    def __repr__(self) -> str:
        return f"FastaFile({str(self.path)!r}, contigs={len(self.contigs)}, bp={sum(self.lengths.values())})"

    def _fasta(self) -> pysam.FastaFile:
        if self._handle is None or self._pid != os.getpid():
            try:
                self._handle = pysam.FastaFile(
                    str(self.path),
                    filepath_index=str(self.fai),
                    filepath_index_compressed=str(self.gzi) if self.gzi is not None else None,
                )
            except (OSError, ValueError) as err:
                raise InputError(f"cannot open {self.path} with its index {self.fai}: {err}") from None
            self._pid = os.getpid()
        return self._handle

    def fetch(self, contig: str, start: int = 0, end: int | None = None) -> str:
        """Sequence of ``contig`` over [start, end) (0-based, half-open; end defaults to the contig end)."""
        end = _check_region(self, contig, start, end)
        return self._fasta().fetch(contig, start, end)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = None

    def __enter__(self) -> FastaFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, None
        return state


def _check_region(fasta, contig: str, start: int, end: int | None) -> int:
    """The checked end of region [start, end) of ``contig`` in a FastaFile or FastaStream (None: contig end)."""
    if contig not in fasta.lengths:
        shown = ", ".join(fasta.contigs[:5]) + (", ..." if len(fasta.contigs) > 5 else "")
        raise InputError(f"contig {contig!r} is not in {fasta.path}; it has {shown}")
    length = fasta.lengths[contig]
    end = length if end is None else end
    if not 0 <= start <= end <= length:
        raise InputError(f"region [{start}, {end}) is outside {contig} of {fasta.path} (length {length}); use "
                         f"0 <= start <= end <= {length}")
    return end


def _no_sequence(path: Path, name: str, number: int) -> InputError:
    return InputError(f"{path}: record {name!r} (record {number}) has no sequence; remove the record or add its "
                      "bases")


class FastaStream:
    """Sequential access to the records of any FASTA, plain gzip included, in constant memory.

    Where :class:`FastaFile` needs an index, this reads the file front to back: one pass at construction
    for the names and lengths (and the checks :func:`iter_fasta` makes), then :meth:`fetch` streams one
    record's bases. Regions fetched in ascending order cost one pass over the file in all; a region
    before the last one fetched reopens the file. For streamed jobs on plain gzip, which cannot be indexed.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = require_file(path, "FASTA file")
        with _corrupt_gzip_is_input_error(self.path), _open_text(self.path) as handle:
            _check_starts_like_fasta(self.path, handle)
        names, lengths, number, name = _NameCheck(self.path), {}, 0, None
        with _corrupt_gzip_is_input_error(self.path), _open_text(self.path) as handle:
            for line in handle:
                if line.startswith(">"):
                    if name is not None and not lengths[name]:
                        raise _no_sequence(self.path, name, number)
                    number += 1
                    name = names.add(line[1:], number)
                    lengths[name] = 0
                elif name is not None:
                    lengths[name] += len(line.rstrip().replace(" ", ""))
        if name is not None and not lengths[name]:
            raise _no_sequence(self.path, name, number)
        self.contigs: tuple[str, ...] = tuple(lengths)
        self.lengths: dict[str, int] = lengths
        self._cursor: _Cursor | None = None

    def __repr__(self) -> str:
        return f"FastaStream({str(self.path)!r}, contigs={len(self.contigs)}, bp={sum(self.lengths.values())})"

    def fetch(self, contig: str, start: int = 0, end: int | None = None) -> str:
        """Sequence of ``contig`` over [start, end) (0-based, half-open; end defaults to the contig end)."""
        end = _check_region(self, contig, start, end)
        cursor = self._cursor
        if cursor is None or cursor.contig != contig or start < cursor.pos:
            cursor = self._cursor = _Cursor(self.path, contig)
        return cursor.read(start, end)

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.lines.close()
        self._cursor = None

    def __enter__(self) -> FastaStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Cursor:
    """Where a :class:`FastaStream` is in one record: the bases from ``pos`` on that were read but not yet
    fetched (the rest of the last line)."""

    def __init__(self, path: Path, contig: str):
        self.contig, self.pos, self.buffer = contig, 0, ""
        self.lines = _sequence_lines(path, contig)

    def _next(self) -> str:
        line = next(self.lines, None)
        if line is None:
            raise InputError(f"{self.contig}: the file ended before the record's counted length; was it changed "
                             "while being read?")
        return line

    def read(self, start: int, end: int) -> str:
        if start == end:
            return ""
        while self.pos + len(self.buffer) <= start:  # skip the lines before the region
            self.pos += len(self.buffer)
            self.buffer = self._next()
        pieces = [self.buffer[start - self.pos:]]
        have = self.pos + len(self.buffer)
        while have < end:
            pieces.append(self._next())
            have += len(pieces[-1])
        text = "".join(pieces)
        self.buffer, self.pos = text[end - start:], end
        return text[: end - start]


def _sequence_lines(path: Path, contig: str) -> Iterator[str]:
    """The bases of record ``contig``, line by line (line ends and spaces removed)."""
    with _corrupt_gzip_is_input_error(path), _open_text(path) as handle:
        inside = False
        for line in handle:
            if line.startswith(">"):
                if inside:
                    return
                inside = line[1:].split(None, 1)[0] == contig if line[1:].strip() else False
            elif inside:
                yield line.rstrip().replace(" ", "")
