"""Prediction tables and training logs as the pipelines write them: `seqssm predict`'s table and `train_log.tsv`.

Readers only (the layer rule: readers live in ``datasets/``); scoring them is ``seqssm.pipelines.evaluate``'s.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqssm.datasets.tables import check_text
from seqssm.errors import InputError, require_file

__all__ = ["PROB_PREFIX", "PredictionTable", "natural", "read_history", "read_predictions", "read_table"]

PROB_PREFIX = "prob_"


@dataclass
class PredictionTable:
    """A parsed prediction table: N rows, K classes (in the file's column order)."""

    path: Path
    columns: list[str]
    lines: list[int]  # file line of each row, for error messages
    ids: list[str] | None
    predicted: list[str]  # raw cells; multi-label sets joined by ";"
    true: list[str] | None  # raw cells of the label column, None when the file has none
    classes: list[str]
    probs: np.ndarray  # [N, K] float64


def read_table(path: Path, what: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) rows of a TSV, or of a CSV when the header has commas but no tabs."""
    check_text(path, f"{what} (a TSV table)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = f.readline()
            delimiter = "," if "\t" not in first and "," in first else "\t"
            f.seek(0)
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            rows = [(reader.line_num, row) for row in reader if row]
    except UnicodeDecodeError as err:
        raise InputError(f"{what} {str(path)!r} is not a UTF-8 text table ({err.reason})") from err
    if not header:
        raise InputError(f"{what} {str(path)!r} is empty; expected a header line and one row per sequence")
    header = [h.strip() for h in header]
    if not rows:
        raise InputError(f"{what} {str(path)!r} has a header but no rows")
    for line, row in rows:
        if len(row) != len(header):
            raise InputError(f"line {line} of {what} {str(path)!r} has {len(row)} fields but the header has "
                             f"{len(header)}; check for stray tabs or a truncated file")
    return header, rows


def natural(labels) -> list[str]:
    """Sorted by value when every label is a number ("2" before "10"), else as strings."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def read_predictions(path: str | Path, *, label_column: str = "label",
                     id_column: str = "id") -> PredictionTable:
    """Read the table `seqssm predict` writes.

    Tab-separated with a header: ``id``, ``predicted``, one ``prob_<label>`` column per class, and optionally
    ``label`` (the true label). Multi-class probabilities are a softmax (each row sums to 1); multi-label ones
    are independent sigmoids, and there ``label`` / ``predicted`` hold the set of labels joined by ``;``
    (empty = none). Labels are strings. Extra columns are ignored.
    """
    path = require_file(path, "predictions file")
    header, rows = read_table(path, "predictions file")
    where = f"predictions file {str(path)!r} (columns: {', '.join(header)})"
    prob_cols = [c for c in header if c.startswith(PROB_PREFIX) and len(c) > len(PROB_PREFIX)]
    if "predicted" not in header:
        raise InputError(f"no 'predicted' column in {where}; `seqssm predict` writes one")
    if not prob_cols:
        raise InputError(f"no {PROB_PREFIX}<label> columns in {where}; write one probability column a class")
    classes = [c[len(PROB_PREFIX):] for c in prob_cols]
    if len(set(classes)) != len(classes):
        raise InputError(f"a {PROB_PREFIX}<label> column appears twice in {where}")
    col = {name: i for i, name in enumerate(header)}
    probs = np.empty((len(rows), len(classes)))
    for r, (line, row) in enumerate(rows):
        for k, name in enumerate(prob_cols):
            try:
                probs[r, k] = float(row[col[name]])
            except ValueError:
                raise InputError(f"line {line} of predictions file {str(path)!r}: {name} = "
                                 f"{row[col[name]]!r} is not a number") from None
    bad = ~np.isfinite(probs) | (probs < -1e-6) | (probs > 1 + 1e-6)
    if bad.any():
        r, k = np.argwhere(bad)[0]
        raise InputError(f"line {rows[r][0]} of predictions file {str(path)!r}: {prob_cols[k]} = "
                         f"{probs[r, k]} is not a probability in [0, 1]")

    def cells(name):
        return [row[col[name]].strip() for _, row in rows] if name in col else None

    return PredictionTable(path=path, columns=header, lines=[line for line, _ in rows], ids=cells(id_column),
                           predicted=cells("predicted"), true=cells(label_column), classes=classes,
                           probs=np.clip(probs, 0.0, 1.0))


def read_history(path: str | Path) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """A training log: (x column name, x [R], {train_*/val_* column: values [R], NaN for an empty cell})."""
    path = require_file(path, "training history")
    header, rows = read_table(path, "training history")
    x_name = next((c for c in ("step", "epoch") if c in header), None)
    names = [c for c in header if c.startswith(("train_", "val_"))]
    if x_name is None or not names:
        raise InputError(f"training history {str(path)!r} needs a 'step' or 'epoch' column and train_*/val_* "
                         f"columns (it has: {', '.join(header)})")
    values = np.full((len(rows), len(names) + 1), np.nan)
    for r, (line, row) in enumerate(rows):
        for j, name in enumerate([x_name, *names]):
            cell = row[header.index(name)].strip()
            try:
                values[r, j] = float(cell) if cell else np.nan
            except ValueError:
                raise InputError(f"line {line} of training history {str(path)!r}: {name} = {cell!r} is not a "
                                 "number") from None
    series = {name: values[:, j + 1] for j, name in enumerate(names) if not np.isnan(values[:, j + 1]).all()}
    if not series:
        raise InputError(f"training history {str(path)!r} has no values in its train_*/val_* columns")
    return x_name, values[:, 0], series
