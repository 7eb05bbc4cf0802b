"""Labelled sequences from tables (TSV/CSV) or labelled FASTA, and seeded train/val/test splits.

Tables need a header row; the delimiter comes from the extension (``.tsv``/``.tab`` tab, ``.csv``
comma) or, for ``.txt`` and anything else, from sniffing the first lines (tab, comma, semicolon).
A ``.gz`` suffix is decompressed on the fly.

FASTA files (``.fa``, ``.fasta``, ``.fna``, ``.fas``, or any file starting with ``>``) carry the label
in each header, in one of two forms:

- ``>seq1 label=promoter`` — a ``label=VALUE`` word after the id (the key is ``label_column``);
- ``>seq1|promoter`` — the label after the last ``|`` of the id, when no ``label=`` word is present.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import re
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from Bio.SeqIO.FastaIO import SimpleFastaParser
from sklearn.model_selection import train_test_split

from seqssm.datasets.batching import Record
from seqssm.datasets.sniff import binary_kind, read_head
from seqssm.errors import InputError, did_you_mean

_FASTA_SUFFIXES = {".fa", ".fasta", ".fna", ".fas", ".ffn"}
_DELIMITERS = {".tsv": "\t", ".tab": "\t", ".csv": ","}
_SEQUENCE = re.compile(r"[A-Za-z]+")


def _natural_key(label: str):
    """Integer-looking labels sort by value ("2" before "10"), the rest as text after them."""
    try:
        return (0, int(label), "")
    except ValueError:
        return (1, 0, label)


@dataclass(frozen=True)
class LabelledSequences:
    """N labelled sequences; ``classes`` is the sorted label vocabulary (derived once).

    Indexing gives a :class:`~seqssm.datasets.batching.Record`; ``label_indices`` gives the labels as
    int64 [N] indices into ``classes``.
    """

    ids: list[str]
    sequences: list[str]
    labels: list[str]
    classes: list[str] = field(init=False)

    def __post_init__(self):
        if not len(self.ids) == len(self.sequences) == len(self.labels):
            raise InputError(
                f"LabelledSequences: {len(self.ids)} ids, {len(self.sequences)} sequences and "
                f"{len(self.labels)} labels; give lists of one length"
            )
        object.__setattr__(self, "classes", sorted(set(self.labels), key=_natural_key))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Record:
        return Record(self.ids[i], self.sequences[i], self.labels[i])

    @property
    def label_indices(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[label] for label in self.labels], dtype=np.int64)


def _open_text(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _base_suffix(path: Path) -> str:
    return Path(path.stem).suffix.lower() if path.suffix == ".gz" else path.suffix.lower()


def _looks_like_fasta(path: Path) -> bool:
    if _base_suffix(path) in _FASTA_SUFFIXES:
        return True
    with _open_text(path) as f:
        for line in f:
            if line.strip():
                return line.startswith(">")
    return False


def _reader(path: Path, f):
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
    return csv.reader(f, delimiter=delimiter)


def _column(path: Path, header: list[str], name: str, what: str, flag: str | None = None) -> int:
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


def _checked_sequence(seq: str, where: str) -> str:
    seq = seq.strip()
    if not _SEQUENCE.fullmatch(seq):
        shown = seq[:20] + ("…" if len(seq) > 20 else "")
        raise InputError(f"{where}: sequence {shown!r} is empty or has non-letter characters; fix that row")
    return seq


def _read_table(path: Path, sequence_column: str, label_column: str, id_column: str) -> LabelledSequences:
    ids, seqs, labels = [], [], []
    with _open_text(path) as f:
        rows = _reader(path, f)
        header = [h.strip() for h in next(rows, [])]
        if not header:
            raise InputError(f"{path}: the table is empty; it needs a header row with {sequence_column!r}")
        s_col = _column(path, header, sequence_column, "sequence", "--sequence-column")
        l_col = _column(path, header, label_column, "label", "--label-column")
        i_col = header.index(id_column) if id_column in header else None
        for row in rows:
            where = f"{path}:{rows.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise InputError(f"{where}: {len(row)} fields, the header has {len(header)}; fix that row")
            label = row[l_col].strip()
            if not label:
                raise InputError(f"{where}: empty label; every row needs a {label_column!r} value")
            seqs.append(_checked_sequence(row[s_col], where))
            labels.append(label)
            ids.append(row[i_col].strip() if i_col is not None else f"{path.name}:{rows.line_num}")
    return LabelledSequences(ids, seqs, labels)


def _split_header(title: str, label_key: str, where: str) -> tuple[str, str]:
    words = title.split()
    if not words:
        raise InputError(f"{where}: empty FASTA header; write '>id {label_key}=LABEL' or '>id|LABEL'")
    prefix = f"{label_key}="
    for word in words[1:]:
        if word.startswith(prefix) and len(word) > len(prefix):
            return words[0], word[len(prefix) :]
    record_id, bar, label = words[0].rpartition("|")
    if not bar or not record_id or not label:
        raise InputError(
            f"{where}: header {title!r} carries no label; write '>id {label_key}=LABEL' or '>id|LABEL'"
        )
    return record_id, label


def _read_fasta(path: Path, label_key: str) -> LabelledSequences:
    ids, seqs, labels = [], [], []
    with _open_text(path) as f:
        for n, (title, seq) in enumerate(SimpleFastaParser(f), start=1):
            where = f"{path}: record {n}"
            record_id, label = _split_header(title, label_key, where)
            ids.append(record_id)
            labels.append(label)
            seqs.append(_checked_sequence(seq, f"{where} ({record_id})"))
    return LabelledSequences(ids, seqs, labels)


def read_labelled_table(
    path: str | os.PathLike,
    sequence_column: str = "sequence",
    label_column: str = "label",
    id_column: str = "id",
) -> LabelledSequences:
    """Read labelled sequences from a TSV/CSV table or a labelled FASTA (forms in the module doc).

    ``sequence_column`` and ``label_column`` must exist; without an ``id_column`` rows are named
    ``file:line``. For FASTA, ``label_column`` is the key of the ``key=VALUE`` header word.
    Labels stay strings; the result's ``classes`` is their sorted vocabulary.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"labelled table {path} does not exist; give a .tsv, .csv or labelled FASTA path")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); give a table with a header row, or a labelled FASTA")
    check_text(path, "table or labelled FASTA")
    with readable_text(path):
        data = _read_fasta(path, label_column) if _looks_like_fasta(path) else _read_table(
            path, sequence_column, label_column, id_column
        )
    if len(data) == 0:
        raise InputError(f"{path}: no labelled sequences found; the file has a header but no rows")
    return data


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
        k_col = _column(path, header, key_column, "key")
        l_col = _column(path, header, label_column, "label")
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
