"""Predicting with a fine-tuned classifier, and the input / output plumbing fine-tuning shares with it.

Inputs (``data_format="auto"`` tells them apart; a mismatch with the classifier's modality is an error):
- DNA: a TSV/CSV table (``sequence`` column; ``id`` and ``label`` optional), a FASTA file (labels from a
  ``label=VALUE`` header word), or a BED file cut from ``genome`` (labels from a column or a name→label
  table).
- audio: a folder (``<label>/<file>`` sub-folders, FSDD ``{digit}_{speaker}_{take}.wav`` names, or plain
  files without labels), a CSV/TSV manifest (``path`` column), or one audio file.

Tables and FASTA files are streamed, so any number of sequences is predicted in constant memory. The output
is the table ``seqssm.pipelines.evaluate.read_predictions`` reads: ``id``, ``predicted``, one ``prob_<class>``
column per class, plus ``label`` when the input has labels. Token-level classifiers write one row per
position, id ``<record id>:<0-based position>``.

Several checkpoints of one task (the same classes, modality, problem type and level; e.g. `seqssm finetune`
runs differing only in ``--init-seed``) predict as an ensemble, :class:`ClassifierEnsemble`: each batch goes
through every member and the table holds the mean of their probabilities, in the same format.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from Bio.SeqIO.FastaIO import SimpleFastaParser

from seqssm.datasets.audio_sets import (
    AUDIO_EXTENSIONS,
    AudioRecord,
    folder_records,
    fsdd_records,
    load_record,
    manifest_records,
)
from seqssm.datasets.batching import pad_batch
from seqssm.datasets.intervals import IntervalDataset
from seqssm.datasets.tables import check_text, readable_text
from seqssm.errors import InputError, did_you_mean
from seqssm.models.heads import IGNORE_INDEX, SequenceClassifier, TaskConfig, encode_dna, load_classifier, read_task
from seqssm.pipelines.common import (
    BROKEN_WEIGHTS,
    CLASSIFIER,
    FILE,
    OutputPlan,
    atomic_path,
    autocast,
    check_checkpoint,
    progress,
    require_file,
    require_finite,
    resolve_device,
)
from seqssm.tokenizers import NucleotideTokenizer

DNA_FORMATS = ("table", "fasta", "bed")
AUDIO_FORMATS = ("folder", "fsdd", "manifest", "file")
_FASTA_SUFFIXES = {".fa", ".fasta", ".fna", ".fas", ".ffn"}
_BED_SUFFIXES = {".bed"}
_FSDD_NAME = re.compile(r"^\d_[A-Za-z]+_\d+$")
MULTI_LABEL_SEP = ";"


class Example(NamedTuple):
    """One input: id, DNA text or a waveform [T] float32, and the raw label (None when unlabelled)."""

    id: str
    data: str | torch.Tensor
    label: str | None


@dataclass
class InputSpec:
    """Where examples come from; the fields of ``FinetuneConfig`` / ``PredictConfig`` of the same names."""

    data: str
    modality: str = "dna"
    data_format: str = "auto"
    genome: str | None = None
    bed_labels: str | None = None
    length: int | None = None
    sequence_column: str = "sequence"
    label_column: str = "label"
    id_column: str = "id"
    fsdd_split: str = "all"
    sample_rate: int | None = None


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
        if files and all(_FSDD_NAME.match(p.stem) for p in files):
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


def _delimiter(path: Path, f) -> str:
    delimiter = {".tsv": "\t", ".tab": "\t", ".csv": ","}.get(_suffix(path))
    if delimiter is None:
        sample = f.read(64 * 1024)
        f.seek(0)
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters="\t,;").delimiter
        except csv.Error:
            raise InputError(f"{path}: cannot tell the column delimiter; name the file .tsv or .csv") from None
    return delimiter


def _table_examples(path: Path, spec: InputSpec, require_labels: bool) -> Iterator[Example]:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=_delimiter(path, f))
        columns = [c.strip() for c in next(reader, [])]
        if spec.sequence_column not in columns:
            raise InputError(f"{path}: no sequence column {spec.sequence_column!r} (columns: {', '.join(columns)}); "
                             f"pass --sequence-column with one of those{did_you_mean(spec.sequence_column, columns)}")
        s_col = columns.index(spec.sequence_column)
        l_col = columns.index(spec.label_column) if spec.label_column in columns else None
        i_col = columns.index(spec.id_column) if spec.id_column in columns else None
        if require_labels and l_col is None:
            raise InputError(f"{path}: no label column {spec.label_column!r} (columns: {', '.join(columns)}); "
                             f"pass --label-column with the column holding the labels"
                             f"{did_you_mean(spec.label_column, columns)}")
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
            yield Example(record_id, row[s_col].strip(), label)


def _fasta_examples(path: Path, spec: InputSpec, require_labels: bool) -> Iterator[Example]:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    key = f"{spec.label_column}="
    with opener(path, "rt", encoding="utf-8") as f:
        for n, (title, seq) in enumerate(SimpleFastaParser(f), start=1):
            words = title.split()
            if not words:
                raise InputError(f"{path}: record {n} has an empty header; give it a name")
            label = next((w[len(key):] for w in words[1:] if w.startswith(key) and len(w) > len(key)), None)
            if require_labels and label is None:
                raise InputError(f"{path}: record {n} ({words[0]}) has no label; write '>id {key}LABEL'")
            if not seq:
                raise InputError(f"{path}: record {n} ({words[0]}) has no sequence; remove the record or add its "
                                 "bases")
            yield Example(words[0], seq, label)


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
            yield from (_fasta_examples if fmt == "fasta" else _table_examples)(path, spec, require_labels)
    else:
        for record in audio_records(spec, fmt, require_labels):
            yield Example(record.id, load_record(record, spec.sample_rate)[0][0], record.label)


def split_label(label: str) -> list[str]:
    """The labels of a multi-label cell ("a;b"; empty = none)."""
    return [part.strip() for part in label.split(MULTI_LABEL_SEP) if part.strip()]


def encode_targets(examples: Sequence[Example], task: TaskConfig, lengths: Sequence[int] | None = None):
    """Targets of a batch, or None when no example has a label.

    single-label sequence: class indices [B]; multi-label: 0/1 [B, K]; token level: class indices [B, L]
    (one label character per base, IGNORE_INDEX on padding and on a cls position), L = max ``lengths``
    (the token counts, cls included).
    """
    labelled = [e.label is not None for e in examples]
    if not any(labelled):
        return None
    if not all(labelled):
        missing = examples[labelled.index(False)].id
        raise InputError(f"input {missing!r} has no label while others have; label every input or none")
    index = {c: i for i, c in enumerate(task.classes)}

    def lookup(label: str, example: Example) -> int:
        if label not in index:
            shown = ", ".join(task.classes[:10]) + (", …" if len(task.classes) > 10 else "")
            raise InputError(f"input {example.id!r}: label {label!r} is not one of the classifier's classes "
                             f"({shown}); fix the label or fine-tune with it")
        return index[label]

    if task.level == "token":
        offset = 1 if task.pooling == "cls" else 0
        out = torch.full((len(examples), max(lengths)), IGNORE_INDEX, dtype=torch.int64)
        for b, e in enumerate(examples):
            if len(e.label) != len(e.data):
                raise InputError(f"input {e.id!r}: {len(e.label)} label characters for {len(e.data)} bases; a "
                                 "token-level label has one character per base")
            out[b, offset:offset + len(e.label)] = torch.tensor([lookup(c, e) for c in e.label])
        return out
    if task.problem_type == "multi_label":
        out = torch.zeros(len(examples), task.num_labels)
        for b, e in enumerate(examples):
            for part in split_label(e.label):
                out[b, lookup(part, e)] = 1.0
        return out
    return torch.tensor([lookup(e.label, e) for e in examples], dtype=torch.int64)


class TaskCollate:
    """Examples → a batch dict: ``ids``, model inputs (``input_ids`` or ``input_values``, and
    ``attention_mask``), ``targets`` (when labelled) and the raw ``labels``.

    ``rc_generator`` (DNA training): reverse-complement each sequence (and reverse a token-level label)
    with probability 1/2, drawn from that generator.
    """

    def __init__(self, task: TaskConfig, rc_generator: torch.Generator | None = None):
        self.task = task
        self.tokenizer = NucleotideTokenizer() if task.modality == "dna" else None
        self.rc_generator = rc_generator

    def _augment(self, examples: list[Example]) -> list[Example]:
        flips = torch.rand(len(examples), generator=self.rc_generator) < 0.5
        rc = self.tokenizer.reverse_complement
        return [Example(e.id, rc(e.data), e.label[::-1] if self.task.level == "token" and e.label else e.label)
                if flip else e for e, flip in zip(examples, flips.tolist(), strict=True)]

    def __call__(self, examples: Sequence[Example]) -> dict:
        examples = list(examples)
        batch: dict = {"ids": [e.id for e in examples], "labels": [e.label for e in examples]}
        if self.task.modality == "dna":
            if any(not isinstance(e.data, str) for e in examples):
                raise InputError("mismatched modality: a DNA classifier got waveform input")
            if self.rc_generator is not None:
                examples = self._augment(examples)
            tokens = encode_dna([e.data for e in examples], self.tokenizer, add_cls=self.task.pooling == "cls",
                                names=[e.id for e in examples])
            batch["input_ids"], batch["attention_mask"] = pad_batch(tokens, self.tokenizer.pad_id)
            lengths = [len(t) for t in tokens]
        else:
            if any(not isinstance(e.data, torch.Tensor) for e in examples):
                raise InputError("mismatched modality: an audio classifier got DNA text input")
            waves = [e.data.float().reshape(-1) for e in examples]
            lengths = [len(w) for w in waves]
            batch["input_values"] = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
            batch["attention_mask"] = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
        batch["targets"] = encode_targets(examples, self.task, lengths)
        return batch


def model_inputs(batch: dict, device: torch.device) -> dict:
    """The batch's tensors that the classifier's forward takes, moved to ``device``."""
    keys = ("input_ids", "input_values", "attention_mask")
    return {k: batch[k].to(device, non_blocking=True) for k in keys if k in batch}


def prediction_rows(batch: dict, probs: torch.Tensor, task: TaskConfig) -> Iterator[list[str]]:
    """Table rows (id, predicted, probabilities…, label) of one batch; ``probs`` [B, K] or [B, L, K]."""
    probs = probs.float().cpu().numpy()
    labelled = batch["labels"][0] is not None
    multi = task.problem_type == "multi_label"
    if task.level == "token":
        mask = batch["attention_mask"].cpu().numpy().astype(bool)
        offset = 1 if task.pooling == "cls" else 0
        for b, record_id in enumerate(batch["ids"]):
            label = batch["labels"][b]
            for pos in range(int(mask[b].sum()) - offset):
                p = probs[b, pos + offset]
                yield [f"{record_id}:{pos}", task.classes[int(p.argmax())], *_fmt(p)] + ([label[pos]] if labelled
                                                                                     else [])
        return
    for b, record_id in enumerate(batch["ids"]):
        p = probs[b]
        if multi:
            predicted = MULTI_LABEL_SEP.join(c for c, q in zip(task.classes, p, strict=True) if q >= 0.5)
        else:
            predicted = task.classes[int(p.argmax())]
        yield [record_id, predicted, *_fmt(p)] + ([batch["labels"][b]] if labelled else [])


def _fmt(p: np.ndarray) -> list[str]:
    return [f"{q:.6f}" for q in p]


def prediction_header(task: TaskConfig, labelled: bool) -> list[str]:
    return ["id", "predicted", *(f"prob_{c}" for c in task.classes)] + (["label"] if labelled else [])


def batched(examples: Iterable[Example], size: int) -> Iterator[list[Example]]:
    iterator = iter(examples)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


class ClassifierEnsemble(torch.nn.Module):
    """Classifiers of one task as one model: probabilities are the mean of the members' (softmax rows, or
    each label's sigmoid for multi-label), every batch through every member.

    ``forward`` takes a member's inputs and gives logits of that mean, [B, K] or [B, L, K] in fp32: log p
    (single-label, so the softmax gives p back) or log-odds (multi-label, so the sigmoid does), hence
    ``probabilities``, ``classification_loss`` and the metrics treat it as one classifier.
    """

    def __init__(self, members: Sequence[SequenceClassifier], names: Sequence[str] | None = None):
        super().__init__()
        if not members:
            raise InputError("an ensemble needs at least one classifier")
        names = list(names) if names is not None else [f"member {i}" for i in range(len(members))]
        check_one_task(list(zip(names, (m.task for m in members), strict=True)))
        self.members = torch.nn.ModuleList(members)
        self.task = members[0].task

    def forward(self, input_ids=None, attention_mask=None, *, input_values=None) -> torch.Tensor:
        probs = torch.stack([m.probabilities(m(input_ids, attention_mask, input_values=input_values))
                             for m in self.members]).mean(0)
        if self.task.problem_type == "multi_label":
            return torch.logit(probs, eps=1e-7)  # eps: finite log-odds for saturated sigmoids
        return torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return self.members[0].probabilities(logits)


def check_one_task(tasks: Sequence[tuple[str, TaskConfig]]) -> None:
    """InputError unless every (checkpoint name, task) has the first one's task and reads inputs as it does:
    the members of an ensemble share each collated batch and the table's columns."""
    first_name, first = tasks[0]
    for name, task in tasks[1:]:
        differ = [f"{field} {getattr(first, field)!r} vs {getattr(task, field)!r}"
                  for field in ("classes", "modality", "problem_type", "level")
                  if getattr(first, field) != getattr(task, field)]
        if not differ and (first.pooling == "cls") != (task.pooling == "cls") and first.modality == "dna":
            differ.append(f"pooling {first.pooling!r} vs {task.pooling!r} (only cls pooling adds a cls token)")
        if not differ and first.modality == "audio" and first.sample_rate != task.sample_rate:
            differ.append(f"sample_rate {first.sample_rate} vs {task.sample_rate}")
        if differ:
            raise InputError(f"checkpoints {first_name} and {name} cannot be averaged: {'; '.join(differ)}; "
                             "ensemble classifiers of one task (same classes, modality, problem type, level)")


@torch.no_grad()
def predict_batches(model: SequenceClassifier | ClassifierEnsemble, batches: Iterable[dict], device: torch.device,
                    source: str = "the model", fix: str = BROKEN_WEIGHTS):
    """(batch, logits fp32, probabilities) for each collated batch, the model in eval mode; InputError naming
    ``source`` (e.g. "checkpoint X") and ending in ``fix`` when a batch's logits are not finite."""
    model.eval()
    for batch in batches:
        with autocast(device):
            logits = model(**model_inputs(batch, device))
        require_finite(logits, source, f"the batch starting at input {batch['ids'][0]!r}", fix)
        yield batch, logits.float(), model.probabilities(logits)


def write_predictions(path: str | os.PathLike, model: SequenceClassifier | ClassifierEnsemble, batches: Iterable[dict],
                      device: torch.device, *, bar=None, keep: list | None = None,
                      source: str = "the model") -> int:
    """Write the prediction table of ``batches`` to ``path`` atomically; returns the number of rows.

    ``keep``: a list that receives (batch, logits, probabilities) of every batch, for metrics. ``source``:
    what error messages name, e.g. "checkpoint X".
    """
    rows = 0
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        for batch, logits, probs in predict_batches(model, batches, device, source):
            if keep is not None:
                keep.append((batch, logits, probs))
            if rows == 0:
                writer.writerow(prediction_header(model.task, batch["labels"][0] is not None))
            for row in prediction_rows(batch, probs, model.task):
                writer.writerow(row)
                rows += 1
            if bar is not None:
                bar.update(len(batch["ids"]))
        if rows == 0:
            raise InputError("no inputs to predict: the input holds no sequences or clips")
    return rows


@dataclass
class PredictConfig:
    """Everything `seqssm predict` takes; the Python API takes the same object.

    ``checkpoint``: one classifier checkpoint folder, or a list of them to predict as an ensemble (the mean
    of their probabilities, :class:`ClassifierEnsemble`). ``modality`` None takes the classifier's; given,
    it must match it. The input fields are those of :class:`InputSpec` (``sample_rate`` is the classifier's
    own).
    """

    checkpoint: str | Sequence[str]
    data: str
    out: str
    modality: str | None = None
    data_format: str = "auto"
    genome: str | None = None
    bed_labels: str | None = None
    length: int | None = None
    sequence_column: str = "sequence"
    label_column: str = "label"
    id_column: str = "id"
    fsdd_split: str = "all"
    batch_size: int = 64
    device: str = "auto"
    impl: str = "auto"
    overwrite: bool = False

    def __post_init__(self):
        if not isinstance(self.checkpoint, (str, os.PathLike)):
            self.checkpoint = [os.fspath(c) for c in self.checkpoint]
            if not self.checkpoint:
                raise InputError("no checkpoint given: pass one classifier checkpoint folder or several")
        if self.batch_size <= 0:
            raise InputError(f"--batch-size must be positive, got {self.batch_size}")
        if self.modality not in (None, "dna", "audio"):
            raise InputError(f"--modality must be dna or audio, got {self.modality!r}")
        if self.length is not None and self.length < 1:
            raise InputError(f"--length must be a positive number of bases, got {self.length}")

    @property
    def checkpoints(self) -> list[str]:
        return [os.fspath(self.checkpoint)] if isinstance(self.checkpoint, (str, os.PathLike)) else self.checkpoint


@dataclass
class PredictResult:
    predictions: Path
    rows: int
    classes: list[str]
    members: int = 1


def predict_outputs(cfg: PredictConfig) -> OutputPlan:
    """The table ``predict`` writes and the inputs it must never replace."""
    labels = cfg.bed_labels if cfg.bed_labels is not None and not cfg.bed_labels.isdigit() else None
    inputs = [*(("checkpoint", c) for c in cfg.checkpoints), ("input", cfg.data), ("genome", cfg.genome),
              ("--bed-labels table", labels)]
    return OutputPlan([(cfg.out, FILE)], inputs=inputs, overwrite=cfg.overwrite)


def predict(cfg: PredictConfig) -> PredictResult:
    """Predict every input of ``cfg.data`` with the classifier at ``cfg.checkpoint`` (or the ensemble of
    several); write ``cfg.out``.

    The table (see the module doc) is written under a temporary name and renamed when complete.
    """
    device = resolve_device(cfg.device)
    names = cfg.checkpoints
    for name in names:  # before loading any weights
        check_checkpoint(name, "predict", modality=cfg.modality, kind=CLASSIFIER)
    check_one_task([(name, read_task(name)) for name in names])
    predict_outputs(cfg).check()
    members = [load_classifier(name, device, impl=cfg.impl) for name in names]
    model = members[0] if len(members) == 1 else ClassifierEnsemble(members, names)
    task = model.task
    spec = InputSpec(data=cfg.data, modality=task.modality, data_format=cfg.data_format, genome=cfg.genome,
                     bed_labels=cfg.bed_labels, length=cfg.length, sequence_column=cfg.sequence_column,
                     label_column=cfg.label_column, id_column=cfg.id_column, fsdd_split=cfg.fsdd_split,
                     sample_rate=task.sample_rate)
    collate = TaskCollate(task)
    batches = (collate(b) for b in batched(iter_examples(spec), cfg.batch_size))
    bar = progress(desc="predict", unit="seq")
    try:
        rows = write_predictions(cfg.out, model, batches, device, bar=bar, source=f"checkpoint {', '.join(names)}")
    finally:
        bar.close()
    return PredictResult(predictions=Path(cfg.out), rows=rows, classes=list(task.classes), members=len(members))
