"""Any file as raw bytes (token-free, MambaByte-style models): files of a path, random training windows,
tiles for embedding.

Nothing is parsed: a FASTA is its bytes, headers and newlines included; text is its UTF-8 (or other)
bytes; gzip files (plain or bgzip) are decompressed transparently, from their magic bytes. The ids are the
byte values 0–255 of :class:`~seqssm.tokenizers.ByteTokenizer` (no specials inside a window).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from seqssm.datasets.window_starts import SPLITS, WindowStarts, item_rng
from seqssm.errors import InputError

_GZIP_MAGIC = b"\x1f\x8b"
# Smaller files are read whole: a folder of many small files must not hold one mapping (and descriptor) each.
MEMMAP_MIN_BYTES = 64 << 20


def byte_files(path: str | os.PathLike, what: str = "input") -> list[Path]:
    """The files ``path`` names: itself, or for a folder every non-hidden regular file under it, sorted by
    relative path; InputError when it is missing or a folder holds no file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {str(path)!r} does not exist; check the path")
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{what} {str(path)!r} is neither a file nor a folder")
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise InputError(f"{what} folder {str(path)!r} holds no files to read as bytes")
    return files


def read_bytes(path: str | os.PathLike) -> np.ndarray:
    """The bytes of file ``path`` as uint8 [N], gunzipped when it starts with the gzip magic. A plain file of
    ``MEMMAP_MIN_BYTES`` or more is memory-mapped (read-only, paged in as windows touch it), not read."""
    path = Path(path)
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == _GZIP_MAGIC
    if not gzipped and path.stat().st_size >= MEMMAP_MIN_BYTES:
        return np.memmap(path, dtype=np.uint8, mode="r")
    raw = path.read_bytes()
    if gzipped:
        try:
            raw = gzip.decompress(raw)  # every member, so bgzip's blocks too
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise InputError(f"{path} is a corrupt or truncated gzip file ({err}); compress it again") from None
    return np.frombuffer(raw, dtype=np.uint8)


def iter_byte_files(path: str | os.PathLike, what: str = "input") -> Iterator[tuple[str, np.ndarray]]:
    """(name, uint8 bytes [N]) of each file of ``path`` (see :func:`byte_files`); name is the file's path
    relative to the folder (the file name for a single file). Empty files are skipped."""
    root = Path(path)
    files = byte_files(root, what)
    for file in files:
        data = read_bytes(file)
        if len(data):
            yield (file.name if root.is_file() else file.relative_to(root).as_posix()), data


class ByteWindowDataset(Dataset):
    """``num_samples`` windows of ``window`` byte ids (int64 tensor [W]) drawn from a file or a folder of them.

    As :class:`~seqssm.datasets.windows.GenomeWindowDataset` draws from contigs: every file is one
    sequence, window starts uniform over every position that fits a whole window inside the split; each
    file's last ``round(val_fraction * length)`` bytes are "val", the rest "train" ("all": whole files).
    Item i depends only on (seed, i) (``np.random.default_rng([seed, i])``), so resumed runs and
    DataLoader workers see the same windows; the draw is the genome's own
    (:class:`~seqssm.datasets.window_starts.WindowStarts`). Files are held in memory (uint8; large plain files
    memory-mapped, see :func:`read_bytes`; gzip ones decompressed whole).
    """

    def __init__(self, path: str | os.PathLike, window: int, num_samples: int = 10_000, seed: int = 0,
                 split: str = "train", val_fraction: float = 0.1):
        if split not in SPLITS:
            raise InputError(f"split={split!r}: use 'train', 'val' or 'all'")
        if not isinstance(window, int) or window < 1:
            raise InputError(f"window={window!r}: use a positive number of bytes")
        if not 0.0 <= val_fraction < 1.0:
            raise InputError(f"val_fraction={val_fraction}: use a fraction in [0, 1)")
        self.path, self.window, self.num_samples, self.seed, self.split = path, window, num_samples, seed, split
        named = list(iter_byte_files(path, "training data"))
        if not named:
            raise InputError(f"training data {str(path)!r} is empty (0 bytes)")
        self.names = [name for name, _ in named]
        self._data = [data for _, data in named]
        self._starts = WindowStarts([len(data) for data in self._data], window, split, val_fraction)
        self.regions = self._starts.regions
        if self._starts.total == 0:
            raise InputError(f"a window of {window} bytes is longer than every file of {path} in split {split!r} "
                             f"(longest available: {self._starts.longest} bytes); lower --window or give more data")

    def __len__(self) -> int:
        return self.num_samples

    def _draw(self, i: int) -> tuple[int, int]:
        """(file index, start) of item i."""
        if not 0 <= i < self.num_samples:
            raise IndexError(f"item {i} out of range for {self.num_samples} samples")
        return self._starts.draw(item_rng(self.seed, i))

    def locate(self, i: int) -> tuple[str, int, int]:
        """(file name, start, end) of item i: the same draw as ``self[i]``."""
        f, start = self._draw(i)
        return self.names[f], start, start + self.window

    def __getitem__(self, i: int) -> torch.Tensor:
        f, start = self._draw(i)
        return torch.from_numpy(self._data[f][start:start + self.window].astype(np.int64))


def tile_bytes(path: str | os.PathLike, window: int | None, stride: int | None = None,
               what: str = "input") -> Iterator[tuple[str, int, int, np.ndarray]]:
    """(file name, start, end, byte ids int64 [end - start]) covering every file of ``path`` left to right:
    whole files (``window`` None), or windows every ``stride`` (default ``window``) bytes, the last of a
    file ending at its end."""
    for name, data in iter_byte_files(path, what):
        if window is None:
            yield name, 0, len(data), data.astype(np.int64)
            continue
        step = stride or window
        start = 0
        while True:
            end = min(start + window, len(data))
            yield name, start, end, data[start:end].astype(np.int64)
            if end == len(data):
                break
            start += step
