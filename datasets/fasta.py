"""FASTA input: random access by region (pysam, indexed) and streaming of whole records (Biopython).

Random access needs a plain or bgzip-compressed FASTA and its ``.fai`` (plus ``.gzi`` for bgzip). A
missing index is built beside the FASTA, or, when that folder is read-only, in the user cache
(``$SEQSSM_CACHE`` or ``~/.cache/seqssm``) under a name keyed by the FASTA's absolute path, size and
mtime, so a changed file never meets a stale index. Plain gzip cannot be indexed; stream it instead.
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
from Bio.SeqIO.FastaIO import SimpleFastaParser

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
    """The first non-blank text must open a '>' header; reads only the start of the file."""
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
    errors found while reading name the path and, where useful, the record.
    """
    path = require_file(path, "FASTA file")
    with _corrupt_gzip_is_input_error(path), _open_text(path) as handle:
        _check_starts_like_fasta(path, handle)
    return _records(path)


def _records(path: Path) -> Iterator[tuple[str, str]]:
    with _corrupt_gzip_is_input_error(path), _open_text(path) as handle:
        for number, (title, seq) in enumerate(SimpleFastaParser(handle), start=1):
            name = title.split(None, 1)[0] if title.strip() else ""
            if not name:
                raise InputError(f"{path}: record {number} has an empty header line; give it a name")
            if not seq:
                raise InputError(f"{path}: record {name!r} (record {number}) has no sequence")
            yield name, seq


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
    return target


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
                f"{self.path} is gzip but not bgzip; recompress with `bgzip` (zcat in.fa.gz | bgzip > "
                "out.fa.gz) or use streaming (iter_fasta): plain gzip cannot be indexed for random access"
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
        if contig not in self.lengths:
            shown = ", ".join(self.contigs[:5]) + (", ..." if len(self.contigs) > 5 else "")
            raise InputError(f"contig {contig!r} is not in {self.path}; it has {shown}")
        length = self.lengths[contig]
        end = length if end is None else end
        if not 0 <= start <= end <= length:
            raise InputError(
                f"region [{start}, {end}) is outside {contig} of {self.path} (length {length}); use "
                f"0 <= start <= end <= {length}"
            )
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
