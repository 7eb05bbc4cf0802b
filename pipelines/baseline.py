"""The strong classical baseline a fine-tuned model has to beat, on exactly the split `seqssm finetune` makes.

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
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqssm.datasets.labelled import InputSpec, natural_key
from seqssm.errors import InputError
from seqssm.pipelines.baseline_features import (
    AUDIO_FEATURES,
    KMER_SIZES,
    audio_statistics,
    kmer_frequencies,
    one_hot,
)
from seqssm.pipelines.common import FILE, OutputPlan, atomic_path
from seqssm.pipelines.metrics import SINGLE_LABEL_METRICS, single_label_scores

C_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0)
FEATURES = ("auto", "onehot", *(f"kmer{k}" for k in KMER_SIZES), *AUDIO_FEATURES)


@dataclass
class BaselineConfig:
    """Everything `seqssm baseline` takes; the Python API takes the same object.

    The data fields (``data`` … ``sample_rate``, ``split``, ``seed``) are ``FinetuneConfig``'s, meaning the
    same, so one set of options gives both commands one split. ``features``: "auto" tries every feature set of
    the modality (DNA: kmer1…kmer6, and onehot for inputs of one length; audio: logmel, mfcc), or name one.
    ``metric``: the val score that picks the features and C. ``out``: folder for baseline.json and
    baseline_predictions.tsv (the table `seqssm evaluate` reads); None writes nothing.
    """

    data: str
    out: str | None = None
    modality: str = "dna"
    data_format: str = "auto"
    genome: str | None = None
    bed_labels: str | None = None
    length: int | None = None
    sequence_column: str = "sequence"
    label_column: str = "label"
    id_column: str = "id"
    sample_rate: int | None = None
    split: Sequence[float] = (0.8, 0.1, 0.1)
    seed: int = 0
    features: str = "auto"
    metric: str = "accuracy"
    max_iter: int = 2000
    overwrite: bool = False

    def __post_init__(self):
        if self.modality not in ("dna", "audio"):
            raise InputError(f"--modality must be dna or audio, got {self.modality!r}")
        if self.features not in FEATURES:
            raise InputError(f"--features must be one of {', '.join(FEATURES)}, got {self.features!r}")
        if self.features in AUDIO_FEATURES and self.modality != "audio" or (
                self.modality == "audio" and self.features not in ("auto", *AUDIO_FEATURES)):
            raise InputError(f"--features {self.features} does not fit --modality {self.modality}")
        if self.metric not in SINGLE_LABEL_METRICS:
            raise InputError(f"--metric must be one of {', '.join(SINGLE_LABEL_METRICS)}, got {self.metric!r}")
        self.split = tuple(float(f) for f in self.split)
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6 \
                or self.split[0] <= 0 or self.split[1] <= 0:
            raise InputError(f"--split must be three fractions train,val,test summing to 1 (train and val > 0), "
                             f"got {self.split}")


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


def baseline_outputs(cfg: BaselineConfig) -> OutputPlan:
    out = Path(cfg.out) if cfg.out is not None else None
    files = [(out / "baseline.json", FILE), (out / "baseline_predictions.tsv", FILE)] if out is not None else []
    labels = cfg.bed_labels if cfg.bed_labels is not None and not cfg.bed_labels.isdigit() else None
    return OutputPlan(files, folder=out, overwrite=cfg.overwrite,
                      inputs=[("data", cfg.data), ("genome", cfg.genome), ("--bed-labels table", labels)])


def baseline(cfg: BaselineConfig, echo=None) -> BaselineResult:
    """Split ``cfg.data`` as `seqssm finetune` does, fit the baseline, write ``{out}/baseline.json`` and
    ``{out}/baseline_predictions.tsv`` when ``out`` is given."""
    from seqssm.datasets.splits import labelled_splits
    from seqssm.pipelines.train_utils import versions

    baseline_outputs(cfg).check()
    spec = InputSpec(data=cfg.data, modality=cfg.modality, data_format=cfg.data_format, genome=cfg.genome,
                     bed_labels=cfg.bed_labels, length=cfg.length, sequence_column=cfg.sequence_column,
                     label_column=cfg.label_column, id_column=cfg.id_column, sample_rate=cfg.sample_rate)
    _, splits, rate = labelled_splits(spec, cfg.split, cfg.seed)
    if not splits["train"] or not splits["val"]:
        raise InputError(f"{cfg.data}: too few examples for a train and a val split; add data")
    result, probs = fit_baseline(splits, cfg.modality, rate, features=cfg.features, metric=cfg.metric,
                                 max_iter=cfg.max_iter, echo=echo)
    if cfg.out is not None:
        out = Path(cfg.out)
        classes = sorted({item.label for items in splits.values() for item in items}, key=natural_key)
        if splits["test"]:
            result.predictions = out / "baseline_predictions.tsv"
            write_baseline_predictions(result.predictions, splits["test"], probs, classes)
        record = {"config": dataclasses.asdict(cfg), "versions": versions(), "classes": classes,
                  "sample_rate": rate, "result": result.to_dict()}
        with atomic_path(out / "baseline.json") as tmp:
            tmp.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
        result.report = out / "baseline.json"
    return result


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def side_by_side(model: dict | None, base: dict | None, names: Sequence[str] = SINGLE_LABEL_METRICS) -> list[str]:
    """Lines of a metric table: one row per metric, the model's test score, the baseline's and the difference."""
    lines = [f"{'test metric':<18} {'model':>8} {'baseline':>9} {'diff':>8}"]
    for name in names:
        a = (model or {}).get(name, math.nan)
        b = (base or {}).get(name, math.nan)
        lines.append(f"{name:<18} {a:>8.4f} {b:>9.4f} {a - b:>+8.4f}")
    return lines
