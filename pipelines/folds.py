"""k-fold cross-validation for `seqssm finetune --folds K`: the fold of every row, each fold's train / val /
test split, the pooled out-of-fold predictions and the paired comparison with the classical baseline.

The rows cross-validated are those finetune would train on: the train and val rows of its one split
(``seqssm.datasets.splits.labelled_splits``); its test rows stay out (``--split 0.9,0.1,0`` puts every row in
the folds). Folds are stratified by label and fixed by ``seed`` (scikit-learn ``StratifiedKFold``). In fold f
the rows of fold f are the test rows; the others are split into train / val in the ratio of ``--split``
(stratified, seeded by ``seed + f``) for early stopping. ``--baseline`` fits the baseline on exactly these
fold splits, so the per-fold differences are paired.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seqssm.datasets.tables import split_indices
from seqssm.errors import InputError
from seqssm.pipelines.common import atomic_path
from seqssm.pipelines.metrics import SINGLE_LABEL_METRICS, single_label_scores


def fold_ids(labels: Sequence[str], k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of each of N rows [N]: stratified by ``labels`` where every class can be (else a plain
    seeded shuffle), a pure function of (labels, k, seed)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(labels)
    if not 2 <= k <= n:
        raise InputError(f"--folds {k}: need 2 to {n} folds for the {n} train and val rows")
    y = np.asarray(labels)
    _, counts = np.unique(y, return_counts=True)
    splitter = (StratifiedKFold(k, shuffle=True, random_state=seed) if counts.min() >= k
                else KFold(k, shuffle=True, random_state=seed))
    ids = np.empty(n, dtype=np.int64)
    for f, (_, test) in enumerate(splitter.split(np.zeros(n), y)):
        ids[test] = f
    return ids


def fold_splits(pool: list, ids: np.ndarray, fractions: Sequence[float], seed: int) -> list[dict]:
    """{"train" / "val" / "test": items} of every fold: test the rows of that fold, the rest split into train
    and val in the ratio ``fractions[0] : fractions[1]``."""
    val_share = fractions[1] / (fractions[0] + fractions[1])
    out = []
    for f in range(int(ids.max()) + 1):
        rest = [item for item, i in zip(pool, ids, strict=True) if i != f]
        train, val = split_indices(len(rest), (1 - val_share, val_share), seed + f, [r.label for r in rest])
        out.append({"train": [rest[i] for i in train], "val": [rest[i] for i in val],
                    "test": [item for item, i in zip(pool, ids, strict=True) if i == f]})
    return out


def read_prediction_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a prediction table (id, predicted, prob_<class>…, label)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return rows[0], rows[1:]


def table_scores(header: list[str], rows: list[list[str]], notes: list[str] | None = None) -> dict:
    """Single-label scores of a prediction table's rows, from its probabilities and labels."""
    classes = [h[len("prob_"):] for h in header if h.startswith("prob_")]
    columns = [header.index(f"prob_{c}") for c in classes]
    probs = np.array([[float(r[j]) for j in columns] for r in rows])
    index = {c: j for j, c in enumerate(classes)}
    y = np.array([index[r[header.index("label")]] for r in rows], dtype=np.int64)
    return single_label_scores(y, probs, classes, notes)


def pool_predictions(paths: list[Path], out: Path) -> tuple[dict, list[dict]]:
    """Write the fold tables ``paths`` (fold f at index f) as one table ``out`` with a ``fold`` column; return
    (the scores of the pooled table, the scores of each fold)."""
    header, pooled, per_fold = None, [], []
    for f, path in enumerate(paths):
        head, rows = read_prediction_table(path)
        if header is not None and head != header:
            raise InputError(f"{path}: its columns differ from fold 0's; the folds' classes should be one set")
        header = head
        per_fold.append(table_scores(head, rows))
        pooled += [[*r, str(f)] for r in rows]
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow([*header, "fold"])
        writer.writerows(pooled)
    return table_scores(header, [r[:-1] for r in pooled]), per_fold


def paired(model: list[dict], base: list[dict], names: Sequence[str] = SINGLE_LABEL_METRICS) -> dict:
    """{metric: {"mean_diff", "se", "folds"}}: the mean over folds of model minus baseline and its paired
    standard error (sample SD of the differences / sqrt(folds)); NaN folds are left out."""
    result = {}
    for name in names:
        diffs = np.array([m.get(name, math.nan) - b.get(name, math.nan) for m, b in zip(model, base, strict=True)])
        diffs = diffs[np.isfinite(diffs)]
        se = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else math.nan
        result[name] = {"mean_diff": float(diffs.mean()) if len(diffs) else math.nan, "se": se,
                        "folds": int(len(diffs))}
    return result


def paired_lines(diffs: dict) -> list[str]:
    """A printable table of ``paired``'s result."""
    lines = [f"{'metric':<18} {'model - baseline':>17} {'paired SE':>10}"]
    for name, d in diffs.items():
        lines.append(f"{name:<18} {d['mean_diff']:>+17.4f} {d['se']:>10.4f}")
    return lines


def cross_validate(cfg, labels: list[str], splits: dict, train_fold) -> tuple[dict, list]:
    """Run ``train_fold(fold_cfg, fold_splits, {"index": f, "of": K})`` (finetune's run, writing
    ``{out}/fold_<f>``) for every fold of the train and val rows of ``splits``; pool their test predictions
    into ``{out}/oof_predictions.tsv`` (and the baseline's into ``baseline_oof_predictions.tsv``). Returns
    (the record for run.json, the fold results)."""
    out = Path(cfg.out)
    pool = splits["train"] + splits["val"]
    if any(";" in label for label in labels):
        raise InputError("--folds stratifies single-label tasks; drop it for multi-label (';') labels")
    ids = fold_ids([item.label for item in pool], cfg.folds, cfg.seed)
    runs = []
    for f, fold in enumerate(fold_splits(pool, ids, cfg.split, cfg.seed)):
        # The folder was checked whole (finetune_outputs), so a fold may replace its own earlier outputs.
        fold_cfg = dataclasses.replace(cfg, out=str(out / f"fold_{f}"), folds=None, overwrite=True)
        runs.append(train_fold(fold_cfg, fold, {"index": f, "of": cfg.folds}))
    pooled, per_fold = pool_predictions([r.test_predictions for r in runs], out / "oof_predictions.tsv")
    record = {"folds": cfg.folds, "rows": len(pool), "left_out_test_rows": len(splits["test"]),
              "fold_ids": {item.id: int(i) for item, i in zip(pool, ids, strict=True)},
              "pooled": pooled, "per_fold": per_fold, "best_steps": [r.best_step for r in runs]}
    if cfg.baseline:
        base_pooled, base_folds = pool_predictions([Path(r.baseline["predictions"]) for r in runs],
                                                   out / "baseline_oof_predictions.tsv")
        record["baseline"] = {"pooled": base_pooled, "per_fold": base_folds,
                              "features": [r.baseline["features"] for r in runs],
                              "paired": paired(per_fold, base_folds)}
    return record, runs
