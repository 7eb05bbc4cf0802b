"""What a file really holds, from its first bytes: so that a PNG renamed ``.fa`` or a BAM renamed ``.tsv`` is
reported as what it is rather than as a malformed FASTA or table."""

from __future__ import annotations

import gzip
import os
import zlib

# Magic numbers at offset 0 (after gzip decompression for the formats htslib writes as BGZF).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an xlsx/docx file)"),
    (b"BAM\x01", "a BAM file"),
    (b"BCF\x02", "a BCF file"),
    (b"CRAM", "a CRAM file"),
    (b"RIFF", "a RIFF file (WAV audio?)"),
    (b"fLaC", "a FLAC audio file"),
    (b"OggS", "an Ogg audio file"),
    (b"ID3", "an MP3 audio file"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x28\xb5\x2f\xfd", "a Zstandard-compressed file"),
    (b"BZh", "a bzip2-compressed file"),
    (b"\xfd7zXZ\x00", "an xz-compressed file"),
)


def binary_kind(head: bytes) -> str | None:
    """A description of what ``head`` (a file's first bytes, decompressed) is when it is not text, else None.

    Text holds no NUL and no other control bytes than tab, LF, form feed and CR; bytes of 128 and more are
    allowed (Latin-1 text is still text, and readers decode it as they must). Binary data is named by its
    magic number where known.
    """
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if any(b < 32 and b not in (9, 10, 12, 13) for b in head):
        return "binary data"
    return None


def read_head(path: str | os.PathLike, size: int = 4096) -> bytes:
    """The first ``size`` bytes of ``path``, decompressed when it is gzip (a corrupt stream gives what
    decompressed before the damage)."""
    with open(path, "rb") as fh:
        raw = fh.read(size)
    if not raw.startswith(b"\x1f\x8b"):
        return raw
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(size)
    except (OSError, EOFError, zlib.error):
        return b""
