"""The one train / val / test split of a labelled input, shared by `seqssm finetune` and `seqssm baseline`.

Both read the input through ``seqssm.datasets.labelled`` and split it here, so a baseline is always scored
on exactly the rows a fine-tuned model is (``tests/test_baseline.py`` checks the ids).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seqssm.datasets.labelled import (
    Example,
    InputSpec,
    audio_records,
    iter_examples,
    read_labelled_table,
    resolve_format,
)
from seqssm.datasets.tables import split_indices

SPLITS = ("train", "val", "test")


def _split(n: int, fractions: Sequence[float], seed: int, stratify) -> tuple[np.ndarray, ...]:
    if fractions[2] == 0:
        train, val = split_indices(n, fractions[:2], seed, stratify)
        return train, val, np.zeros(0, dtype=np.int64)
    return split_indices(n, fractions, seed, stratify)


def labelled_splits(spec: InputSpec, fractions: Sequence[float], seed: int, level: str = "sequence"):
    """(labels of every item [N], {"train" / "val" / "test": items}, sample rate or None).

    Items are :class:`~seqssm.datasets.labelled.Example` for DNA and ``AudioRecord`` for audio. The split is
    seeded by ``seed`` (``split_indices``), stratified by label for single-label sequence tasks; an FSDD folder
    keeps its own test split (takes 0-4) and splits the rest into train / val in the ratio of ``fractions``.
    The sample rate is ``spec.sample_rate`` or the first audio file's.
    """
    fmt = resolve_format(spec)
    if fmt in ("table", "fasta"):
        table = read_labelled_table(spec.data, spec.sequence_column, spec.label_column, spec.id_column)
        items: list = [Example(i, s, lab) for i, s, lab in zip(table.ids, table.sequences, table.labels,
                                                                strict=True)]
    elif fmt == "bed":
        items = list(iter_examples(spec, require_labels=True))
    else:
        items = audio_records(spec, fmt, require_labels=True)
    labels = [item.label for item in items]
    if fmt == "fsdd":
        test = [i for i, r in enumerate(items) if int(r.id.rsplit("_", 1)[1]) < 5]
        pool = [i for i, r in enumerate(items) if int(r.id.rsplit("_", 1)[1]) >= 5]
        frac = fractions[0] / (fractions[0] + fractions[1])
        tr, va = split_indices(len(pool), (frac, 1 - frac), seed, [labels[i] for i in pool])
        parts = (np.asarray(pool)[tr], np.asarray(pool)[va], np.asarray(test))
    else:
        single = level == "sequence" and not any(";" in label for label in labels)
        parts = _split(len(items), fractions, seed, labels if single else None)
    splits = {name: [items[i] for i in idx] for name, idx in zip(SPLITS, parts, strict=True)}
    rate = None
    if spec.modality == "audio":
        from seqssm.datasets.audio import audio_info

        rate = spec.sample_rate or audio_info(items[0].path).sample_rate
    return labels, splits, rate
