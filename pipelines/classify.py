"""What classification jobs share (finetune, predict): targets of a batch, collation, the model's inputs,
and the prediction table (``id``, ``predicted``, one ``prob_<class>`` column per class, plus ``label``
when the input has labels; token-level classifiers write one row per position, id
``<record id>:<0-based position>``), the table ``seqssm.datasets.predictions.read_predictions`` reads.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from seqssm.datasets.batching import pad_batch
from seqssm.datasets.labelled import MULTI_LABEL_SEP, Example, natural_key, split_label
from seqssm.errors import InputError
from seqssm.models.ensemble import ClassifierEnsemble
from seqssm.models.heads import IGNORE_INDEX, SequenceClassifier, TaskConfig, encode_dna
from seqssm.pipelines.common import BROKEN_WEIGHTS, atomic_path, autocast, require_finite
from seqssm.tokenizers import NucleotideTokenizer

# Padded batches are rounded up to a multiple of this many tokens (SEQSSM_PAD_TOKENS=1: whole tokens only). The Triton
# kernels specialise every integer argument on its divisibility by 16 and compile once per class: batches of
# random lengths (FSDD crops) gave each kernel a fresh compile of ~3 s for each new class of L, B·L and the
# strides (31 specialisations in an epoch where one batch needs 10), and rows not 16-aligned also lose the
# scan backward's PTX path. With L a multiple of 16 every length-derived integer divides by 16 whatever the
# batch size. The masks keep each real row's output what it was (padding is zeros at the right end). Only where the
# Triton kernels run (pad_tokens_for): the CPU's chunked scan compiles nothing and would pay for the extra
# positions alone (FSDD, 10 ms log-mel frames: +7 % a step).
PAD_TOKENS = int(os.environ.get("SEQSSM_PAD_TOKENS", "16"))


def pad_tokens_for(device: torch.device | str, impl: str = "auto") -> int:
    """The ``pad_tokens`` of :class:`TaskCollate` for a model on ``device`` with kernel path ``impl``: PAD_TOKENS
    where Triton compiles its kernels (CUDA, impl auto or triton), else 1."""
    return PAD_TOKENS if torch.device(device).type == "cuda" and impl in ("auto", "triton") else 1


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
    with probability 1/2, drawn from that generator. ``pad_tokens`` (:func:`pad_tokens_for` the model's device):
    the token count L of a padded batch is rounded up to a multiple of it (waveforms and patched DNA to a multiple
    of ``pad_tokens`` × ``patch_size`` samples or bases; 1: whole tokens only); sequence-level only, and not with
    flatten pooling, whose length is fixed.
    """

    def __init__(self, task: TaskConfig, rc_generator: torch.Generator | None = None, pad_tokens: int = 1):
        self.task = task
        self.tokenizer = NucleotideTokenizer() if task.modality == "dna" else None
        self.rc_generator = rc_generator
        if pad_tokens < 1:
            raise InputError(f"pad_tokens={pad_tokens} (SEQSSM_PAD_TOKENS?); give a positive integer, 1 for none")
        rounded = task.level == "sequence" and task.pooling != "flatten"
        self.pad_tokens = pad_tokens if rounded else 1

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
            multiple = self.pad_tokens * (self.task.patch_size or 1)  # bases: tokens may be patches of them
            batch["input_ids"], batch["attention_mask"] = pad_batch(tokens, self.tokenizer.pad_id, multiple)
            lengths = [len(t) for t in tokens]
        else:
            if any(not isinstance(e.data, torch.Tensor) for e in examples):
                raise InputError("mismatched modality: an audio classifier got DNA text input")
            waves = [e.data.float().reshape(-1) for e in examples]
            lengths = [len(w) for w in waves]
            multiple = self.pad_tokens * (self.task.patch_size or 1)  # samples: tokens are patches or frames
            width = -(-max(lengths) // multiple) * multiple
            padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
            batch["input_values"] = torch.nn.functional.pad(padded, (0, width - padded.shape[1]))
            batch["attention_mask"] = torch.arange(width)[None] < torch.tensor(lengths)[:, None]
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


def class_weights(spec, task: TaskConfig, train: list) -> torch.Tensor | None:
    """Loss weights [K] for ``--class-weights``: None, "balanced" (scikit-learn's, or negatives/positives per
    class for multi-label) or K comma-separated positive numbers in the order of ``task.classes``."""
    if spec is None:
        return None
    k = task.num_labels
    if isinstance(spec, str) and spec == "balanced":
        from sklearn.utils.class_weight import compute_class_weight  # 1-2 s of imports; predict never needs it

        if task.problem_type == "multi_label":
            hot = np.zeros((len(train), k))
            index = {c: j for j, c in enumerate(task.classes)}
            for i, item in enumerate(train):
                hot[i, [index[p] for p in split_label(item.label)]] = 1
            positives = hot.sum(axis=0)
            return torch.tensor((len(train) - positives) / np.maximum(positives, 1), dtype=torch.float32)
        y = [c for item in train for c in item.label] if task.level == "token" else [item.label for item in train]
        present = sorted(set(y), key=natural_key)
        weights = dict(zip(present, compute_class_weight("balanced", classes=np.array(present), y=np.array(y)),
                           strict=True))
        return torch.tensor([weights.get(c, 1.0) for c in task.classes], dtype=torch.float32)
    try:
        values = [float(v) for v in (spec.split(",") if isinstance(spec, str) else spec)]
    except ValueError:
        raise InputError(f"--class-weights {spec!r}: give 'balanced' or {k} comma-separated numbers") from None
    if len(values) != k or any(not v > 0 for v in values):
        raise InputError(f"--class-weights has {len(values)} values, need {k} positive ones, one per class in "
                         f"the order {', '.join(task.classes)}")
    return torch.tensor(values, dtype=torch.float32)
