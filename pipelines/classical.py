"""The classical baseline itself, shared by `seqssm baseline` and `seqssm finetune --baseline`: features,
a logistic regression per feature set and C, the choice on val, its test predictions, and the side-by-side
table.

The input is read and split by ``seqssm.datasets.splits.labelled_splits``, the function finetune splits with,
so with the same data options, ``split`` and ``seed`` both score the same test rows. Features (see
``seqssm.pipelines.baseline_features``): DNA k-mer frequencies for k = 1..6 and, when every input has one
length, one-hot bases; audio the mean and standard deviation over time of log-mel bands or of MFCCs and their
deltas. For every feature set and every C of ``C_GRID`` a standardised logistic regression (scikit-learn)
is fitted on the train rows and scored on the val rows; the pair with the best val ``metric`` (ties: the
earlier, i.e. smaller k and stronger regularisation) is the baseline, and its fit on the train rows is scored
on the test rows with the metrics of ``seqssm.pipelines.metrics``.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqssm.datasets.labelled import natural_key
from seqssm.errors import InputError
from seqssm.pipelines.baseline_features import (
    AUDIO_FEATURES,
    KMER_SIZES,
    audio_statistics,
    kmer_frequencies,
    one_hot,
)
from seqssm.pipelines.common import atomic_path
from seqssm.pipelines.metrics import SINGLE_LABEL_METRICS, single_label_scores

C_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0)


@dataclass
class BaselineResult:
    """``features`` and ``C``: the pair chosen on val; ``grid``: val ``metric`` of every pair tried;
    ``test_metrics``: None when the test split is empty; ``ids``: the row ids of each split."""

    features: str
    C: float
    metric: str
    val_metrics: dict
    test_metrics: dict | None
    sizes: dict
    grid: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    seconds: float = 0.0
    ids: dict = field(default_factory=dict)
    predictions: Path | None = None
    report: Path | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("ids", "predictions", "report")}


def _candidates(modality: str, features: str, splits: dict) -> list[str]:
    if features != "auto":
        return [features]
    if modality == "audio":
        return list(AUDIO_FEATURES)
    lengths = {len(item.data) for items in splits.values() for item in items}
    return [f"kmer{k}" for k in KMER_SIZES] + (["onehot"] if len(lengths) == 1 else [])


def _featurize(name: str, items: list, modality: str, rate: int | None, cache: dict):
    """Features [N, F] of ``items`` (Examples for DNA, AudioRecords for audio); audio decoded once."""
    if modality == "audio":
        if "waves" not in cache:
            from seqssm.datasets.audio_sets import load_record

            cache["waves"] = [load_record(r, rate)[0].mean(dim=0) for r in items]
        return audio_statistics(cache["waves"], rate, name)
    sequences = [item.data for item in items]
    return one_hot(sequences) if name == "onehot" else kmer_frequencies(sequences, int(name[4:]))


def _model(C: float, sparse: bool, max_iter: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(with_mean=not sparse), LogisticRegression(C=C, max_iter=max_iter))


def _probabilities(model, x, k: int) -> np.ndarray:
    """[N, K] over all K classes (a class absent from the train rows gets probability 0)."""
    probs = np.zeros((x.shape[0], k))
    probs[:, model.classes_] = model.predict_proba(x)
    return probs


def fit_baseline(splits: dict, modality: str, rate: int | None = None, *, features: str = "auto",
                 metric: str = "accuracy", max_iter: int = 2000, echo=None) -> tuple[BaselineResult, np.ndarray]:
    """Choose features and C on ``splits["val"]``, score the train fit on ``splits["test"]``.

    ``splits``: {"train" / "val" / "test": items} as ``labelled_splits`` returns. Returns the result and the
    test probabilities [N_test, K] (classes in natural order, ``result`` … see :class:`BaselineResult`).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    start = time.perf_counter()
    labels = [item.label for items in splits.values() for item in items]
    if any(label is None or ";" in label for label in labels):
        raise InputError("seqssm baseline is a single-label classifier; the input has multi-label (';') cells")
    classes = sorted(set(labels), key=natural_key)
    index = {c: j for j, c in enumerate(classes)}
    y = {name: np.array([index[item.label] for item in items], dtype=np.int64) for name, items in splits.items()}
    if len(set(y["train"].tolist())) < 2:
        raise InputError(f"the train split holds {len(set(y['train'].tolist()))} class; a baseline needs two or "
                         "more; add data or change --split")
    grid, best = [], None
    caches = {name: {} for name in splits}
    for name in _candidates(modality, features, splits):
        x = {part: _featurize(name, items, modality, rate, caches[part]) for part, items in splits.items() if items}
        sparse = hasattr(x["train"], "tocsr")
        for C in C_GRID:
            model = _model(C, sparse, max_iter)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(x["train"], y["train"])
            val = single_label_scores(y["val"], _probabilities(model, x["val"], len(classes)), classes)
            grid.append({"features": name, "C": C, f"val_{metric}": val[metric]})
            if best is None or val[metric] > best[0]:
                best = (val[metric], name, C, model, val, x.get("test"))
        if echo is not None:
            top = max((g for g in grid if g["features"] == name), key=lambda g: g[f"val_{metric}"])
            echo(f"baseline {name}: best val {metric} {top[f'val_{metric}']:.4f} at C {top['C']:g}")
    _, name, C, model, val, x_test = best
    notes: list[str] = []
    test_metrics, probs = None, np.zeros((0, len(classes)))
    if splits["test"]:
        probs = _probabilities(model, x_test, len(classes))
        test_metrics = single_label_scores(y["test"], probs, classes, notes)
    result = BaselineResult(features=name, C=C, metric=metric, val_metrics=val, test_metrics=test_metrics,
                            sizes={part: len(items) for part, items in splits.items()}, grid=grid, notes=notes,
                            seconds=round(time.perf_counter() - start, 1),
                            ids={part: [item.id for item in items] for part, items in splits.items()})
    return result, probs


def write_baseline_predictions(path: Path, items: list, probs: np.ndarray, classes: list[str]) -> None:
    """The test rows in `seqssm predict`'s table layout: id, predicted, prob_<class>…, label."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "predicted", *(f"prob_{c}" for c in classes), "label"])
        for item, p in zip(items, probs, strict=True):
            writer.writerow([item.id, classes[int(p.argmax())], *(f"{q:.6f}" for q in p), item.label])


def side_by_side(model: dict | None, base: dict | None, names: Sequence[str] = SINGLE_LABEL_METRICS) -> list[str]:
    """Lines of a metric table: one row per metric, the model's test score, the baseline's and the difference."""
    lines = [f"{'test metric':<18} {'model':>8} {'baseline':>9} {'diff':>8}"]
    for name in names:
        a = (model or {}).get(name, math.nan)
        b = (base or {}).get(name, math.nan)
        lines.append(f"{name:<18} {a:>8.4f} {b:>9.4f} {a - b:>+8.4f}")
    return lines


def baseline_on_split(splits: dict, modality: str, rate: int | None, metric: str, out: Path) -> dict:
    """`seqssm baseline` on this run's own split: its record for run.json; its test predictions are written to
    ``{out}/baseline_predictions.tsv`` (for `seqssm evaluate --baseline`)."""
    chosen = metric if metric in SINGLE_LABEL_METRICS else "accuracy"
    result, probs = fit_baseline(splits, modality, rate, metric=chosen)
    path = out / "baseline_predictions.tsv"
    if splits["test"]:
        classes = sorted({item.label for items in splits.values() for item in items}, key=natural_key)
        write_baseline_predictions(path, splits["test"], probs, classes)
    else:
        path.unlink(missing_ok=True)
    return {**result.to_dict(), "predictions": str(path) if splits["test"] else None}
