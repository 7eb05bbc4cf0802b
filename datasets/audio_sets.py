"""Labelled audio clips and long-recording windows as torch Datasets.

Sources return plain :class:`AudioRecord` lists (id, path, label, start, end in seconds, half-open):
a folder-per-class layout, a CSV/TSV manifest, or the Free Spoken Digit Dataset's file names.
:class:`AudioClipDataset` turns records into fixed-length clips with a mask and a label index.
Pretraining windows over long recordings are :class:`seqssm.datasets.audio_windows.AudioStreamWindows`.
Quantisation into token ids happens later, in the collate step (``seqssm.transforms``).
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from seqssm.datasets.audio import audio_info, load_audio
from seqssm.errors import InputError

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioClipDataset",
    "AudioRecord",
    "folder_records",
    "fsdd_take",
    "fsdd_records",
    "load_record",
    "manifest_records",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")
FSDD_TEST_TAKES = range(5)  # the split the dataset's README prescribes: takes 0-4 of every speaker


@dataclass(frozen=True)
class AudioRecord:
    """One clip: the part [start, end) seconds of a file (end None: to the end of the file)."""

    id: str
    path: Path
    label: str | None = None
    start: float = 0.0
    end: float | None = None


def folder_records(root: str | Path, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> list[AudioRecord]:
    """Records from ``root/<label>/**/<file>``: the folder name under ``root`` is the label.

    Hidden files and folders and files with other extensions are ignored. Ids are paths relative to
    ``root`` without the extension; records are sorted by id.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: folder not found; give the folder that holds one sub-folder per class")
    extensions = {ext.lower() for ext in extensions}
    stray = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if stray:
        raise InputError(
            f"{root}: audio file {stray[0]}{f' and {len(stray) - 1} more' if len(stray) > 1 else ''} "
            "lie outside any class folder; "
            "the layout is root/<label>/<file>, so give the parent folder or move the files"
        )
    records = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in class_dir.rglob("*"):
            rel = file.relative_to(root)
            if file.is_file() and file.suffix.lower() in extensions and not _hidden(rel):
                records.append(AudioRecord(rel.with_suffix("").as_posix(), file, class_dir.name))
    if not records:
        raise InputError(f"{root}: no {'/'.join(sorted(extensions))} files in any class folder")
    return sorted(records, key=lambda r: r.id)


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def manifest_records(path: str | Path) -> list[AudioRecord]:
    """Records from a CSV (``.csv``) or tab-separated (``.tsv``, ``.tab``) table with a header row.

    Columns: ``path`` (relative to the manifest's folder, or absolute), ``label`` (optional column),
    ``start`` and ``end`` in seconds (optional columns, and an empty cell means the file's start or end),
    ``id`` (optional; default the path, plus ``@start-end`` when a segment is given).
    """
    path = Path(path)
    delimiter = {".csv": ",", ".tsv": "\t", ".tab": "\t"}.get(path.suffix.lower())
    if delimiter is None:
        raise InputError(f"{path}: manifest must be a .csv or .tsv (.tab) table, got '{path.suffix}'")
    if not path.is_file():
        raise InputError(f"{path}: manifest not found; check the path")
    records = []
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets often write a BOM
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = reader.fieldnames or []
        if "path" not in columns:
            raise InputError(
                f"{path}: the header has no 'path' column (found {columns}); "
                "the manifest needs path and optionally label, start, end, id"
            )
        for row in reader:
            where = f"{path} line {reader.line_num}"
            rel = (row.get("path") or "").strip()
            if not rel:
                raise InputError(f"{where}: empty path")
            file = Path(rel) if Path(rel).is_absolute() else path.parent / rel
            if not file.is_file():
                raise InputError(f"{where}: audio file {file} not found (paths are relative to the manifest)")
            start = _seconds(row.get("start"), "start", where)
            end = _seconds(row.get("end"), "end", where)
            if end is not None and end <= (start or 0.0):
                raise InputError(f"{where}: end {end} s is not after start {start or 0.0} s")
            label = None
            if "label" in columns:
                label = (row.get("label") or "").strip()
                if not label:
                    raise InputError(f"{where}: empty label")
            record_id = (row.get("id") or "").strip() or rel + _segment_suffix(start, end)
            records.append(AudioRecord(record_id, file, label, start or 0.0, end))
    if not records:
        raise InputError(f"{path}: the manifest has a header but no rows")
    return records


def _segment_suffix(start: float | None, end: float | None) -> str:
    if start is None and end is None:
        return ""
    return f"@{start or 0:g}-{'' if end is None else f'{end:g}'}"


def _seconds(cell: str | None, column: str, where: str) -> float | None:
    cell = (cell or "").strip()
    if not cell:
        return None
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"{where}: {column} {cell!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{where}: {column} {cell!r} must be a finite, non-negative number of seconds")
    return value


def fsdd_records(root: str | Path, split: str = "all") -> list[AudioRecord]:
    """Free Spoken Digit Dataset records from files named ``{digit}_{speaker}_{take}.wav``; label = digit.

    Args:
        root: the folder of FSDD recordings.
        split: ``"test"`` (takes 0-4 of every speaker and digit, 300 files of the 3,000), ``"train"`` (the
            rest, 2,700) or ``"all"``.
    """
    if split not in ("all", "train", "test"):
        raise InputError(f"FSDD split {split!r} is not one of 'all', 'train', 'test'")
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            f"{root}: FSDD folder not found; give the folder of {{digit}}_{{speaker}}_{{take}}.wav"
        )
    records = []
    for file in sorted(root.glob("*.wav")):
        match = _FSDD_NAME.match(file.stem)
        if match is None:
            raise InputError(f"{file}: name is not {{digit}}_{{speaker}}_{{take}}.wav; remove it from {root}")
        is_test = int(match.group(3)) in FSDD_TEST_TAKES
        if split == "all" or (split == "test") == is_test:
            records.append(AudioRecord(file.stem, file, match.group(1)))
    if not records:
        raise InputError(
            f"{root}: no FSDD recordings ({{digit}}_{{speaker}}_{{take}}.wav) for split {split!r}"
        )
    return records


def fsdd_take(name: str | Path) -> int | None:
    """The take number of an FSDD file name ``{digit}_{speaker}_{take}[.wav]``; None for other names."""
    match = _FSDD_NAME.match(Path(name).stem)
    return None if match is None else int(match.group(3))


def load_record(
    record: AudioRecord, sample_rate: int | None = None, channel: str | int | None = "mix"
) -> tuple[torch.Tensor, int]:
    """Decode a record's [start, end) seconds (seeking) into (waveform [C, T], rate); see ``load_audio``."""
    if record.start == 0 and record.end is None:
        return load_audio(record.path, sample_rate, channel)
    rate = audio_info(record.path).sample_rate
    offset = round(record.start * rate)
    num_frames = None if record.end is None else round(record.end * rate) - offset
    if num_frames is not None and num_frames <= 0:
        raise InputError(f"record {record.id}: [{record.start}, {record.end}) s is shorter than one frame")
    return load_audio(record.path, sample_rate, channel, offset, num_frames)


def _rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    # A SeedSequence over the tuple: independent streams per item, the same in every worker process.
    return np.random.default_rng([seed, epoch, index])


def _check_int(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{what} must be an integer of at least {minimum}, got {value!r}")
    return value


def _check_channel(channel) -> str | int:
    if channel != "mix" and (isinstance(channel, bool) or not isinstance(channel, int)):
        raise InputError(f"channel must be 'mix' or a channel index, got {channel!r}")
    return channel


class AudioClipDataset(Dataset):
    """Records as fixed-length clips: item i is (waveform [T] float32, mask [T] bool, label index int).

    Each record is decoded whole (records are clips of seconds; long recordings are windowed by
    :class:`~seqssm.datasets.audio_windows.AudioStreamWindows`), mixed to mono or one channel, and
    resampled to ``sample_rate``. A clip longer than
    T = ``clip_length`` is cropped: ``crop="random"`` draws the start from (seed, epoch, i), so items
    are reproducible, vary with :meth:`set_epoch` and agree across DataLoader workers; ``"center"`` takes
    the middle. A shorter clip is zero-padded at the end and ``mask`` is False over the padding. Label
    indices follow ``classes`` (default: the sorted distinct labels); a record without label gets -1.

    With ``skip_bad=True`` every record is decoded once here, and those that fail are dropped with one
    warning listing them (kept in :attr:`skipped`); by default a bad file raises InputError when read.
    """

    def __init__(
        self,
        records: Sequence[AudioRecord],
        sample_rate: int,
        clip_length: int,
        crop: str = "random",
        seed: int = 0,
        classes: Sequence[str] | None = None,
        skip_bad: bool = False,
        channel: str | int = "mix",
    ) -> None:
        if crop not in ("random", "center"):
            raise InputError(f"crop {crop!r} is not 'random' or 'center'")
        _check_int(clip_length, "clip_length (samples)")
        _check_int(sample_rate, "sample_rate (Hz)")
        records = list(records)
        if not records:
            raise InputError("AudioClipDataset: no records given")
        labels = {r.label for r in records if r.label is not None}
        self.classes = list(classes) if classes is not None else sorted(labels)
        unknown = labels - set(self.classes)
        if unknown:
            raise InputError(f"labels {sorted(unknown)[:5]} are not among classes {self.classes[:10]}")
        self._class_index = {label: i for i, label in enumerate(self.classes)}
        self.sample_rate, self.clip_length, self.crop = sample_rate, clip_length, crop
        self.seed, self.channel, self.epoch = _check_int(seed, "seed", 0), _check_channel(channel), 0
        self.skipped: list[tuple[AudioRecord, str]] = []
        if skip_bad:
            records = self._drop_unreadable(records)
        self.records = records

    def _drop_unreadable(self, records: list[AudioRecord]) -> list[AudioRecord]:
        good = []
        for record in records:
            try:
                load_record(record, None, self.channel)
            except InputError as err:
                self.skipped.append((record, str(err)))
            else:
                good.append(record)
        if not good:
            raise InputError(f"all {len(records)} audio records are unreadable, e.g. {self.skipped[0][1]}")
        if self.skipped:
            listing = "; ".join(reason for _, reason in self.skipped[:20])
            more = f" (and {len(self.skipped) - 20} more)" if len(self.skipped) > 20 else ""
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable audio file(s): {listing}{more}", stacklevel=3
            )
        return good

    def set_epoch(self, epoch: int) -> None:
        """Draw different random crops in this epoch (call before iterating, as with DistributedSampler)."""
        self.epoch = _check_int(epoch, "epoch", 0)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        record = self.records[index]
        wave = load_record(record, self.sample_rate, self.channel)[0][0]
        length, size = wave.shape[0], self.clip_length
        if length >= size:
            if self.crop == "center":
                start = (length - size) // 2
            else:
                start = int(_rng(self.seed, self.epoch, index).integers(length - size + 1))
            return wave[start : start + size].clone(), torch.ones(size, dtype=torch.bool), self._label(record)
        clip = torch.zeros(size, dtype=wave.dtype)
        clip[:length] = wave
        mask = torch.zeros(size, dtype=torch.bool)
        mask[:length] = True
        return clip, mask, self._label(record)

    def _label(self, record: AudioRecord) -> int:
        return -1 if record.label is None else self._class_index[record.label]
