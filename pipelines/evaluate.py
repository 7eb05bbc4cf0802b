"""Evaluating a classifier's prediction table: metrics (scikit-learn), pictures and an HTML report."""

from __future__ import annotations

import json
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    classification_report,
    confusion_matrix,
    f1_score,
    hamming_loss,
    multilabel_confusion_matrix,
    roc_auc_score,
)
from sklearn.preprocessing import MultiLabelBinarizer

from seqssm.datasets.predictions import (
    PROB_PREFIX,
    PredictionTable,
    natural,
    read_history,
    read_predictions,
    read_table,
)
from seqssm.errors import InputError, require_file
from seqssm.pipelines import report as pictures
from seqssm.pipelines.configs_labelled import EvaluateConfig
from seqssm.pipelines.metrics import per_class_curves, single_label_scores
from seqssm.pipelines.outputs import FILE, OutputPlan, atomic_path
from seqssm.version import __version__

# A softmax written with 4-6 decimals still sums to 1 within this; independent sigmoids almost never do.
_SUM_TOLERANCE = 0.01
_OPTIONAL_OUTPUTS = ("curves.png", "roc_pr.png")
_OUTPUTS = ("metrics.json", "report.html", "confusion_matrix.png", *_OPTIONAL_OUTPUTS)


def _join_labels(table: PredictionTable, labels_path: str, id_column: str, label_column: str) -> list[str]:
    """The true label of each prediction row, looked up by id in a separate table."""
    path = require_file(labels_path, "labels table")
    if table.ids is None:
        raise InputError(f"no {id_column!r} column in predictions file {str(table.path)!r} to join labels "
                         f"table {str(path)!r} on; pass --id-column with the name of its id column")
    header, rows = read_table(path, "labels table")
    missing = [c for c in (id_column, label_column) if c not in header]
    if missing:
        raise InputError(f"labels table {str(path)!r} lacks column(s) {', '.join(map(repr, missing))} "
                         f"(columns: {', '.join(header)}); set --id-column / --label-column to its names")
    i, j = header.index(id_column), header.index(label_column)
    truth: dict[str, str] = {}
    for line, row in rows:
        key, value = row[i].strip(), row[j].strip()
        if truth.setdefault(key, value) != value:
            raise InputError(f"line {line} of labels table {str(path)!r}: id {key!r} appears again with a "
                             f"different label ({truth[key]!r} before, {value!r} here)")
    absent = [key for key in dict.fromkeys(table.ids) if key not in truth]
    if absent:
        examples = ", ".join(repr(a) for a in absent[:3])
        raise InputError(f"{len(absent)} of {len(set(table.ids))} prediction ids are missing from labels "
                         f"table {str(path)!r} (e.g. {examples}); ids must match its {id_column!r} column")
    return [truth[key] for key in table.ids]


def _infer_task(table: PredictionTable, true: list[str], requested: str, notes: list[str]) -> str:
    k = len(table.classes)
    sums = table.probs.sum(axis=1)
    if requested == "auto":
        reasons = []
        if any(";" in c for c in table.predicted + true):
            reasons.append("label cells hold ';'-joined sets")
        if any(not c for c in table.predicted):
            reasons.append("some 'predicted' cells are empty")
        if np.abs(sums - 1).max() > _SUM_TOLERANCE:
            reasons.append("probability rows do not sum to 1")
        if reasons:
            notes.append(f"task taken as multi-label: {', '.join(reasons)}; pass --task to override")
            requested = "multilabel"
        else:
            requested = "binary" if k == 2 else "multiclass"
    if requested != "multilabel" and k < 2:
        raise InputError(f"predictions file {str(table.path)!r} has a single {PROB_PREFIX} column; a "
                         "single-label classifier needs one per class (at least two)")
    if requested == "binary" and k != 2:
        raise InputError(f"task 'binary' needs exactly two {PROB_PREFIX} columns; predictions file "
                         f"{str(table.path)!r} has {k}; use --task multiclass")
    return requested


def _parse_labels(cells: list[str], column: str, table: PredictionTable, multilabel: bool, source: str):
    """Check every label against the prob_ columns; a list of labels, or of label lists when multi-label."""
    known = set(table.classes)
    parsed = []
    for line, cell in zip(table.lines, cells, strict=True):
        labels = [p.strip() for p in cell.split(";") if p.strip()] if multilabel else [cell]
        if not multilabel and not cell:
            raise InputError(f"line {line} of {source}: empty {column!r} cell; every row of a single-label "
                             "task needs one label (pass --task multilabel if empty means 'no label')")
        unknown = [x for x in labels if x not in known]
        if unknown:
            raise InputError(f"line {line} of {source}: label {unknown[0]!r} in column {column!r} has no "
                             f"{PROB_PREFIX}{unknown[0]} column (classes: {', '.join(table.classes)})")
        parsed.append(labels if multilabel else cell)
    return parsed


_curve_scores = per_class_curves  # one-vs-rest AUROC / AUPRC of the classes with both kinds of rows


def _macro_curve_scores(y_bin: np.ndarray, probs: np.ndarray, ok: list[int]):
    """Macro AUROC and AUPRC over the columns ``ok`` (None, None when there are none)."""
    if not ok:
        return None, None
    return (roc_auc_score(y_bin[:, ok], probs[:, ok], average="macro"),
            average_precision_score(y_bin[:, ok], probs[:, ok], average="macro"))


def _split_report(rep: dict, classes: list[str]) -> tuple[dict, dict]:
    """classification_report's dict split into per-class rows and average rows, supports as integers."""
    rows = {k: {**v, "support": int(v["support"])} for k, v in rep.items() if isinstance(v, dict)}
    return {c: rows[c] for c in classes}, {k: v for k, v in rows.items() if k not in classes}


def _single_label(classes, y_true, y_pred, probs, positive, notes) -> dict:
    y_bin = (np.asarray(y_true)[:, None] == np.asarray(classes)[None, :]).astype(int)
    auroc, auprc = _curve_scores(y_bin, probs, classes, notes)
    # The predicted column, not the argmax of the probabilities: a table may come from any classifier.
    index = {c: j for j, c in enumerate(classes)}
    hard = np.eye(len(classes))[[index[c] for c in y_pred]]
    scores = single_label_scores(np.array([index[c] for c in y_true]), hard)
    metrics = {name: scores[name] for name in ("accuracy", "balanced_accuracy", "macro_f1", "mcc")}
    if positive is not None:
        metrics["auroc"], metrics["auprc"] = auroc.get(positive), auprc.get(positive)
    else:
        ok = [k for k, c in enumerate(classes) if c in auroc]
        if ok and len(ok) < len(classes):
            notes.append(f"macro AUROC/AUPRC average the {len(ok)} of {len(classes)} classes in the truth")
        metrics["macro_auroc"], metrics["macro_auprc"] = _macro_curve_scores(y_bin, probs, ok)
    rep = classification_report(y_true, y_pred, labels=classes, target_names=classes, output_dict=True,
                                zero_division=0)
    per_class, averages = _split_report(rep, classes)
    majority = max(classes, key=lambda c: per_class[c]["support"])
    baseline = {"label": majority, "accuracy": accuracy_score(y_true, [majority] * len(y_true))}
    return {"metrics": metrics, "majority_baseline": baseline, "per_class": per_class, "averages": averages,
            "y_bin": y_bin, "auroc": auroc, "auprc": auprc,
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes)}


def _multilabel(classes, y_true, y_pred, probs, notes) -> dict:
    binarizer = MultiLabelBinarizer(classes=classes)
    t, p = binarizer.fit_transform(y_true), binarizer.transform(y_pred)
    auroc, auprc = _curve_scores(t, probs, classes, notes)
    macro_auroc, macro_auprc = _macro_curve_scores(t, probs, [k for k, c in enumerate(classes) if c in auroc])
    metrics = {
        "subset_accuracy": accuracy_score(t, p),
        "micro_f1": f1_score(t, p, average="micro", zero_division=0),
        "macro_f1": f1_score(t, p, average="macro", zero_division=0),
        "hamming_loss": hamming_loss(t, p),
        "macro_auroc": macro_auroc,
        "macro_auprc": macro_auprc,
    }
    rep = classification_report(t, p, target_names=classes, output_dict=True, zero_division=0)
    per_class, averages = _split_report(rep, classes)
    return {"metrics": metrics, "per_class": per_class, "averages": averages, "y_bin": t, "auroc": auroc,
            "auprc": auprc, "confusion_matrix": multilabel_confusion_matrix(t, p)}


def _baseline_scores(cfg: EvaluateConfig, table: PredictionTable, y_true: list, order: list[str],
                     positive: str | None) -> dict:
    """The metrics of ``cfg.baseline``'s table, its rows matched to ``table``'s by id, against the same truth."""
    where = f"baseline predictions {cfg.baseline!r}"
    if any(isinstance(y, list) for y in y_true):
        raise InputError(f"{where}: a baseline comparison is for single-label tasks; drop --baseline")
    other = read_predictions(cfg.baseline, label_column=cfg.label_column, id_column=cfg.id_column)
    same_order = table.ids is not None and table.ids == other.ids  # row by row, even when ids repeat
    if not same_order and (table.ids is None or other.ids is None or sorted(table.ids) != sorted(other.ids)
                           or len(set(table.ids)) < len(table.ids)):
        raise InputError(f"{where} must hold the rows of {str(table.path)!r}, in its order or matched "
                         f"by a unique {cfg.id_column!r} column; score both on one split (same --seed and --split)")
    if sorted(other.classes) != sorted(order):
        raise InputError(f"{where} has classes {', '.join(other.classes)}, {str(table.path)!r} "
                         f"{', '.join(order)}; they must be the same")
    row = {key: i for i, key in enumerate(other.ids)}
    take = list(range(len(other.ids))) if same_order else [row[key] for key in table.ids]
    probs = other.probs[take][:, [other.classes.index(c) for c in order]]
    predicted = [other.predicted[i] for i in take]
    unknown = sorted(set(predicted) - set(order))
    if unknown:
        raise InputError(f"{where}: predicted label {unknown[0]!r} is not one of its classes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        scores = _single_label(order, y_true, predicted, probs, positive, [])
    return {"predictions": str(cfg.baseline), "metrics": scores["metrics"]}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if np.isnan(value) else float(value)
    return value


def _write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def evaluate_outputs(cfg: EvaluateConfig) -> OutputPlan:
    """The files ``evaluate`` may write into ``cfg.out`` and the inputs it must never replace."""
    out = Path(cfg.out)
    return OutputPlan([(out / name, FILE) for name in _OUTPUTS], folder=out, overwrite=cfg.overwrite,
                      inputs=[("predictions file", cfg.predictions), ("labels table", cfg.labels),
                              ("training history", cfg.history), ("baseline predictions", cfg.baseline)])


def evaluate(cfg: EvaluateConfig) -> dict:
    """Score ``cfg.predictions`` against the true labels; write the results to ``cfg.out``; return the report.

    Writes ``metrics.json`` (the returned dict), ``confusion_matrix.png``, ``roc_pr.png`` (when some class
    has both positive and negative rows), ``curves.png`` (when ``cfg.history`` is given) and a self-contained
    ``report.html``. Every input is checked before anything is written; each file is written under a temporary
    name and renamed, and an optional picture left from an earlier run that this run does not make is removed.

    Single-label tasks: accuracy, balanced accuracy, macro F1, MCC, and AUROC/AUPRC of the positive class
    (binary) or their one-vs-rest macro averages (multi-class). Multi-label: subset accuracy, micro/macro F1,
    Hamming loss, macro AUROC/AUPRC. All tasks: per-class precision, recall, F1, support, AUROC and AUPRC.
    """
    evaluate_outputs(cfg).check()
    table = read_predictions(cfg.predictions, label_column=cfg.label_column, id_column=cfg.id_column)
    where = f"predictions file {str(table.path)!r}"
    if cfg.labels is not None:
        true_cells = _join_labels(table, cfg.labels, cfg.id_column, cfg.label_column)
        source = f"labels table {cfg.labels!r}"
    elif table.true is not None:
        true_cells, source = table.true, where
    else:
        raise InputError(f"no {cfg.label_column!r} column in {where} (columns: {', '.join(table.columns)}); "
                         "pass --labels with a table of id and label columns, or --label-column with the truth column")
    notes: list[str] = []
    task = _infer_task(table, true_cells, cfg.task, notes)
    multilabel = task == "multilabel"
    y_true = _parse_labels(true_cells, cfg.label_column, table, multilabel, source)
    y_pred = _parse_labels(table.predicted, "predicted", table, multilabel, where)
    order = natural(table.classes)
    probs = table.probs[:, [table.classes.index(c) for c in order]]
    positive = None
    if task == "binary":
        positive = order[1] if cfg.positive_label is None else str(cfg.positive_label)
        if positive not in order:
            raise InputError(f"--positive-label {positive!r} is not a class of {where} "
                             f"(classes: {', '.join(order)})")
    elif cfg.positive_label is not None:
        raise InputError(f"--positive-label is only for binary tasks; {where} is {task} "
                         f"with {len(order)} classes")
    history = read_history(cfg.history) if cfg.history is not None else None

    with warnings.catch_warnings():
        # Undefined cases (a class never predicted, a class absent from the truth) are reported in `notes`.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        scores = (_multilabel(order, y_true, y_pred, probs, notes) if multilabel
                  else _single_label(order, y_true, y_pred, probs, positive, notes))
    base = _baseline_scores(cfg, table, y_true, order, positive) if cfg.baseline is not None else None
    title = cfg.title or f"Evaluation of {table.path.name}"
    report = _jsonable({
        "title": title, "task": task, "predictions": str(cfg.predictions),
        "labels_from": cfg.labels if cfg.labels is not None else f"column {cfg.label_column!r}",
        "n": len(y_true), "classes": order, "positive_label": positive, "metrics": scores["metrics"],
        "per_class": scores["per_class"], "averages": scores["averages"],
        "majority_baseline": scores.get("majority_baseline"),
        "confusion_matrix": scores["confusion_matrix"], "notes": notes, "baseline": base,
    })
    for name in order:
        for key in ("auroc", "auprc"):
            report["per_class"][name][key] = scores[key].get(name)

    images: dict[str, tuple[str, bytes]] = {}
    if multilabel:
        images["Confusion matrix"] = ("confusion_matrix.png", pictures.multilabel_confusion_png(
            scores["confusion_matrix"], order, subset_accuracy=report["metrics"]["subset_accuracy"],
            title=title))
    else:
        images["Confusion matrix"] = ("confusion_matrix.png", pictures.confusion_png(
            scores["confusion_matrix"], order, accuracy=report["metrics"]["accuracy"], title=title))
    # A binary task shows the positive class only: the negative class's ROC curve is its mirror image.
    shown = scores["auroc"] if positive is None else {
        c: v for c, v in scores["auroc"].items() if c == positive}
    if shown:
        images["ROC and precision–recall"] = ("roc_pr.png", pictures.roc_pr_png(
            scores["y_bin"], probs, order, auroc=shown, auprc=scores["auprc"], title=title))
    if history is not None:
        x_name, x, series = history
        images["Training history"] = ("curves.png", pictures.history_png(x_name, x, series, title=title))
        report["history"] = {"path": str(cfg.history), "rows": len(x), "last": {
            name: float(v[~np.isnan(v)][-1]) for name, v in series.items()}}
    report["files"] = [file for file, _ in images.values()] + ["metrics.json", "report.html"]
    page = pictures.render_html(report, {heading: png for heading, (_, png) in images.items()},
                                generated=datetime.now().isoformat(timespec="seconds"),
                                version=__version__)

    out = Path(cfg.out)
    for file, png in images.values():
        _write(out / file, png)
    _write(out / "metrics.json", (json.dumps(report, indent=2) + "\n").encode())
    _write(out / "report.html", page.encode())
    for stale in set(_OPTIONAL_OUTPUTS) - set(report["files"]):
        (out / stale).unlink(missing_ok=True)
    return report
