"""The one reader of labelled (or unlabelled) inputs, used by finetune, predict, probe and evaluate.

Inputs (``data_format="auto"`` tells them apart; a mismatch with the task's modality is an error):
- DNA: a TSV/CSV table (``sequence`` column; ``id`` and ``label`` optional), a FASTA file (labels from a
  ``label=VALUE`` header word, or, where labels are required, ``>id|LABEL``), or a BED file cut from
  ``genome`` (labels from a column or a name→label table).
- audio: a folder (``<label>/<file>`` sub-folders, FSDD ``{digit}_{speaker}_{take}.wav`` names, or plain
  files without labels), a CSV/TSV manifest (``path`` column), or one audio file.

Tables need a header row; the delimiter comes from the extension (``.tsv``/``.tab`` tab, ``.csv`` comma)
or, for anything else, from sniffing the first lines (tab, comma, semicolon). A ``.gz`` suffix is
decompressed on the fly. :func:`iter_examples` streams (any number of inputs in constant memory);
:func:`read_labelled_table` collects a labelled table or FASTA into :class:`LabelledSequences`, with
every sequence checked to be letters.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from seqssm.datasets.audio_sets import (
    AUDIO_EXTENSIONS,
    AudioRecord,
    folder_records,
    fsdd_records,
    fsdd_take,
    load_record,
    manifest_records,
)
from seqssm.datasets.batching import Record
from seqssm.datasets.input_spec import InputSpec
from seqssm.datasets.intervals import IntervalDataset
from seqssm.datasets.tables import check_text, column_index, readable_text, table_delimiter
from seqssm.errors import InputError, require_file

DNA_FORMATS = ("table", "fasta", "bed")
AUDIO_FORMATS = ("folder", "fsdd", "manifest", "file")
_FASTA_SUFFIXES = {".fa", ".fasta", ".fna", ".fas", ".ffn"}
_BED_SUFFIXES = {".bed"}
MULTI_LABEL_SEP = ";"


class Example(NamedTuple):
    """One input: id, DNA text or a waveform [T] float32, and the raw label (None when unlabelled)."""

    id: str
    data: str | torch.Tensor
    label: str | None


def _suffix(path: Path) -> str:
    return Path(path.stem).suffix.lower() if path.suffix.lower() == ".gz" else path.suffix.lower()


def _first_line(path: Path) -> str:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as f:
            for line in f:
                if line.strip():
                    return line
    except (UnicodeDecodeError, OSError, EOFError):
        return ""
    return ""


def resolve_format(spec: InputSpec) -> str:
    """The input format of ``spec.data`` (checked against ``spec.modality``)."""
    path = Path(spec.data)
    if not path.exists():
        raise InputError(f"input {str(path)!r} does not exist; give a table, FASTA, BED, audio folder or file")
    known = DNA_FORMATS if spec.modality == "dna" else AUDIO_FORMATS
    if spec.data_format != "auto":
        if spec.data_format not in known:
            raise InputError(f"data format {spec.data_format!r} is not one for {spec.modality}; use one of "
                             f"{', '.join(known)} (or auto)")
        return spec.data_format
    audio_like = path.is_dir() or path.suffix.lower() in AUDIO_EXTENSIONS
    if spec.modality == "dna":
        if audio_like:
            raise InputError(f"mismatched modality: {str(path)!r} is audio (a folder or sound file) but the "
                             "task is DNA; give a table, FASTA or BED file, or use an audio classifier")
        if _suffix(path) in _BED_SUFFIXES:
            return "bed"
        return "fasta" if _suffix(path) in _FASTA_SUFFIXES or _first_line(path).startswith(">") else "table"
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
        if files and all(fsdd_take(p) is not None for p in files):
            return "fsdd"
        return "file" if files else "folder"
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        return "file"
    first = _first_line(path)
    columns = [c.strip() for c in re.split(r"[\t,;]", first)]
    dna_table = "path" not in columns and spec.sequence_column in columns
    if _suffix(path) in _FASTA_SUFFIXES | _BED_SUFFIXES or first.startswith(">") or dna_table:
        raise InputError(f"mismatched modality: {str(path)!r} holds DNA but the task is audio; give an audio "
                         "folder, file or a manifest with a 'path' column, or use a DNA classifier")
    return "manifest"


def _table_rows(path: Path, spec: InputSpec, require_labels: bool) -> Iterator[tuple[str, Example]]:
    """(``file:line``, example) of every row of a table with a header."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=table_delimiter(path, f))
        columns = [c.strip() for c in next(reader, [])]
        if not columns:
            raise InputError(f"{path}: the table is empty; it needs a header row with {spec.sequence_column!r}")
        s_col = column_index(path, columns, spec.sequence_column, "sequence", "--sequence-column")
        l_col = columns.index(spec.label_column) if spec.label_column in columns else None
        i_col = columns.index(spec.id_column) if spec.id_column in columns else None
        if require_labels and l_col is None:
            column_index(path, columns, spec.label_column, "label", "--label-column")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                raise InputError(f"{where}: {len(row)} fields, the header has {len(columns)}; fix that row")
            label = row[l_col].strip() if l_col is not None else None
            if label == "":
                raise InputError(f"{where}: empty label; every row needs a {spec.label_column!r} value")
            record_id = row[i_col].strip() if i_col is not None else f"{path.name}:{reader.line_num}"
            if not row[s_col].strip():
                raise InputError(f"{where}: empty {spec.sequence_column!r} cell; fill it or remove the row")
            yield where, Example(record_id, row[s_col].strip(), label)


def _fasta_rows(path: Path, spec: InputSpec, require_labels: bool) -> Iterator[tuple[str, Example]]:
    """(``file: record N (id)``, example) of every record; the label is a ``key=VALUE`` header word (key
    ``spec.label_column``) or, when labels are required and there is none, the text after the id's last ``|``."""
    from Bio.SeqIO.FastaIO import SimpleFastaParser  # 0.17 s of imports that a table never needs

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    key = f"{spec.label_column}="
    with opener(path, "rt", encoding="utf-8") as f:
        for n, (title, seq) in enumerate(SimpleFastaParser(f), start=1):
            words = title.split()
            if not words:
                raise InputError(f"{path}: record {n} has an empty header; give it a name")
            record_id = words[0]
            label = next((w[len(key):] for w in words[1:] if w.startswith(key) and len(w) > len(key)), None)
            if require_labels and label is None:
                head, bar, tail = record_id.rpartition("|")
                if not (bar and head and tail):
                    raise InputError(f"{path}: record {n}: header {title!r} carries no label; write "
                                     f"'>id {key}LABEL' or '>id|LABEL'")
                record_id, label = head, tail
            if not seq:
                raise InputError(f"{path}: record {n} ({record_id}) has no sequence; remove the record or add its "
                                 "bases")
            yield f"{path}: record {n} ({record_id})", Example(record_id, seq, label)


def _bed_examples(spec: InputSpec, require_labels: bool) -> Iterator[Example]:
    if spec.genome is None:
        raise InputError(f"{spec.data} is a BED file: pass --genome with the FASTA its intervals come from")
    labels = spec.bed_labels
    column = int(labels) if labels is not None and labels.isdigit() else labels
    if require_labels and column is None:
        raise InputError(f"{spec.data}: BED intervals need labels; pass --bed-labels with a column index (e.g. 6) "
                         "or a table of name and label")
    dataset = IntervalDataset(spec.data, spec.genome, length=spec.length, label_column=column)
    for i in range(len(dataset)):
        record = dataset[i]
        yield Example(record.id, record.sequence, record.label)


def audio_records(spec: InputSpec, fmt: str, require_labels: bool) -> list[AudioRecord]:
    """The audio records of ``spec`` in format ``fmt`` (see the module doc)."""
    path = Path(spec.data)
    if fmt == "fsdd":
        records = fsdd_records(path, spec.fsdd_split)
    elif fmt == "manifest":
        records = manifest_records(path)
    elif fmt == "folder":
        records = folder_records(path)
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        records = [AudioRecord(p.stem, p) for p in files]
    else:
        records = [AudioRecord(path.stem, require_file(path, "audio file"))]
    if require_labels and any(r.label is None for r in records):
        raise InputError(f"{path}: the audio records carry no labels; use <label>/<file> folders, FSDD names "
                         "or a manifest with a 'label' column")
    return records


def iter_examples(spec: InputSpec, *, require_labels: bool = False) -> Iterator[Example]:
    """Stream the examples of ``spec``; audio is decoded (mono, at ``spec.sample_rate``) one clip at a time."""
    fmt = resolve_format(spec)
    path = Path(spec.data)
    if fmt == "bed":
        yield from _bed_examples(spec, require_labels)
    elif fmt in ("fasta", "table"):
        require_file(path, "FASTA file" if fmt == "fasta" else "table")
        if path.stat().st_size == 0:
            raise InputError(f"{path} is empty (0 bytes); give a table with a header row, a FASTA or a BED file")
        check_text(path, "table, FASTA or BED file")
        with readable_text(path):
            for _, example in (_fasta_rows if fmt == "fasta" else _table_rows)(path, spec, require_labels):
                yield example
    else:
        for record in audio_records(spec, fmt, require_labels):
            yield Example(record.id, load_record(record, spec.sample_rate)[0][0], record.label)


def split_label(label: str) -> list[str]:
    """The labels of a multi-label cell ("a;b"; empty = none)."""
    return [part.strip() for part in label.split(MULTI_LABEL_SEP) if part.strip()]


def natural_key(label: str):
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
        object.__setattr__(self, "classes", sorted(set(self.labels), key=natural_key))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Record:
        return Record(self.ids[i], self.sequences[i], self.labels[i])

    @property
    def label_indices(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[label] for label in self.labels], dtype=np.int64)


_LETTERS = re.compile(r"[A-Za-z]+")


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
    spec = InputSpec(data=str(path), sequence_column=sequence_column, label_column=label_column,
                     id_column=id_column)
    rows = _fasta_rows if _suffix(path) in _FASTA_SUFFIXES or _first_line(path).startswith(">") else _table_rows
    ids, seqs, labels = [], [], []
    with readable_text(path):
        for where, example in rows(path, spec, True):
            seq = example.data.strip()
            if not _LETTERS.fullmatch(seq):
                shown = seq[:20] + ("…" if len(seq) > 20 else "")
                raise InputError(f"{where}: sequence {shown!r} is empty or has non-letter characters; fix that row")
            ids.append(example.id)
            seqs.append(seq)
            labels.append(example.label)
    if not ids:
        raise InputError(f"{path}: no labelled sequences found; the file has a header but no rows")
    return LabelledSequences(ids, seqs, labels)
