"""Text tables: their delimiter, columns and one-line errors for undecodable or binary files; the
name→label lookup BED inputs use; and seeded, stratified train/val/test splits.

The labelled-data reader built on these is ``seqssm.datasets.labelled``.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seqssm.datasets.sniff import binary_kind, read_head
from seqssm.errors import InputError, did_you_mean

_DELIMITERS = {".tsv": "\t", ".tab": "\t", ".csv": ","}
def _open_text(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _base_suffix(path: Path) -> str:
    return Path(path.stem).suffix.lower() if path.suffix == ".gz" else path.suffix.lower()


def table_delimiter(path: Path, f) -> str:
    """The delimiter of table ``path`` open as ``f``: from the extension, else sniffed from its first 64 kB."""
    delimiter = _DELIMITERS.get(_base_suffix(path))
    if delimiter is None:
        sample = f.read(64 * 1024)
        f.seek(0)
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters="\t,;").delimiter
        except csv.Error as err:
            raise InputError(
                f"{path}: cannot tell the column delimiter; name the file .tsv or .csv"
            ) from err
    return delimiter


def _reader(path: Path, f):
    return csv.reader(f, delimiter=table_delimiter(path, f))


def column_index(path: Path, header: list[str], name: str, what: str, flag: str | None = None) -> int:
    """The index of column ``name``; InputError naming the columns there are and ``flag``, the option that
    picks another (None: the name is fixed)."""
    if name not in header:
        fix = f"pass {flag} with one of those{did_you_mean(name, header)}" if flag else f"name a column {name!r}"
        raise InputError(f"{path}: no {what} column {name!r} (columns: {', '.join(header) or 'none'}); {fix}")
    return header.index(name)


@contextlib.contextmanager
def readable_text(path: Path):
    """Undecodable bytes and broken gzip streams, met anywhere in a table, as one-line errors."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8 text (byte {err.object[err.start]:#04x} cannot be decoded); save it "
                         "as UTF-8") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise InputError(f"{path} is a truncated or corrupt gzip file ({err}); re-download or re-compress it") from None


def check_text(path: Path, what: str) -> None:
    """InputError when ``path`` is empty or binary (a PNG, a BAM…) rather than the text ``what`` should be."""
    kind = binary_kind(read_head(path))
    if kind is not None:
        raise InputError(f"{path} is {kind}, not a {what}; pass a text {what}")


def read_label_map(path: str | os.PathLike, key_column: str = "name", label_column: str = "label") -> dict:
    """A two-column lookup (e.g. BED name → label) from a TSV/CSV table with a header."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"label table {path} does not exist; give a .tsv/.csv with {key_column!r}, {label_column!r}"
        )
    check_text(path, "label table")
    out = {}
    with readable_text(path), _open_text(path) as f:
        rows = _reader(path, f)
        header = [h.strip() for h in next(rows, [])]
        k_col = column_index(path, header, key_column, "key")
        l_col = column_index(path, header, label_column, "label")
        for row in rows:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise InputError(
                    f"{path}:{rows.line_num}: {len(row)} fields, the header has {len(header)}; fix that row"
                )
            out[row[k_col].strip()] = row[l_col].strip()
    return out


def _split_off(pool: np.ndarray, size: int, seed: int, labels: np.ndarray | None):
    """(kept, taken) with ``size`` indices taken from ``pool``, stratified by ``labels`` if possible."""
    from sklearn.model_selection import train_test_split  # 1-2 s of imports that a reader without splits skips

    if size == 0:
        return pool, pool[:0]
    if size == len(pool):
        return pool[:0], pool
    if labels is not None:
        try:
            return train_test_split(pool, test_size=size, random_state=seed, stratify=labels[pool])
        except ValueError as err:
            warnings.warn(f"split_indices: cannot stratify ({err}); splitting without it", stacklevel=3)
    return train_test_split(pool, test_size=size, random_state=seed)


def split_indices(
    n: int,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: Sequence | None = None,
) -> tuple[np.ndarray, ...]:
    """Seeded split of ``range(n)`` into parts of the given fractions (e.g. train/val/test).

    The result depends only on (n, fractions, seed, stratify): no global random state is read or
    changed. Parts after the first get ``round(f * n)`` items and the first the rest. With
    ``stratify`` (N labels) each part keeps the label proportions (scikit-learn's
    ``train_test_split``), falling back to a plain shuffle with a warning when a class is too rare.

    Returns:
        One sorted int64 index array per fraction, disjoint and covering ``range(n)``.
    """
    fractions = [float(f) for f in fractions]
    if n < 1:
        raise InputError(f"split_indices: n={n}; need at least one item")
    if len(fractions) < 2 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise InputError(
            f"split_indices: fractions {fractions} must be 2 or more non-negative numbers summing to 1"
        )
    if not 0 <= seed < 2**32:
        raise InputError(f"split_indices: seed={seed}; give an integer in [0, 2**32)")
    labels = None
    if stratify is not None:
        labels = np.asarray(stratify)
        if len(labels) != n:
            raise InputError(
                f"split_indices: {len(labels)} stratify labels for n={n}; give one label per item"
            )
    sizes = [round(f * n) for f in fractions[1:]]
    if sum(sizes) > n:
        raise InputError(f"split_indices: fractions {fractions} leave no room for the first part at n={n}")
    pool = np.arange(n)
    parts = []
    for size in reversed(sizes):
        pool, taken = _split_off(pool, size, seed, labels)
        parts.append(np.sort(taken))
    parts.append(np.sort(pool))
    return tuple(p.astype(np.int64) for p in reversed(parts))
