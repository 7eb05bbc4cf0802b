"""One-hot logistic-regression baseline on the seeded splits `seqssm finetune --seed S` makes; prints a table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/promoter_baseline.py [--table PATH] [--seeds 0 1 2 3 4]
        [--models SUMMARY.tsv]

The table (default ``../shared/data/labelled/ecoli_promoters.tsv``) is read and split exactly as
``seqssm.pipelines.finetune`` does (``read_labelled_table``, then ``split_indices`` 0.8 / 0.1 / 0.1 by ``seed``,
stratified by label); ``tests/test_promoter_baseline.py`` checks that against finetune's own loader. Each
sequence becomes a one-hot [L * 4] vector (A, C, G, T; any other base all zeros), and scikit-learn's
``LogisticRegression`` is fitted on the train split at each ``C`` and scored on the test split. "C by val"
refits nothing: it is the test accuracy of the grid's ``C`` with the best validation accuracy, the same
selection the fine-tuned model's kept checkpoint gets.

``--models`` reads a tab-separated summary with ``seed`` and ``test_acc`` columns (``.carry/six2_gpu.sh``
writes one) and adds the model's test accuracy per seed and its paired difference to the "C by val"
baseline: the same test sequences per seed, so split-to-split variation cancels in the difference. With a
``model`` column (several rows per seed: single models and ensembles, ``.carry/six3_gpu.sh``) it prints one
paired table per model name, in the summary's order, and then one line per model.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from seqssm.datasets.labelled import read_labelled_table
from seqssm.datasets.tables import split_indices
from seqssm.errors import InputError

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "labelled" / "ecoli_promoters.tsv"
REPORTED_C = (0.1, 1.0)
C_GRID = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
_BASES = np.full(256, -1, dtype=np.int64)
for _i, _b in enumerate("ACGT"):
    _BASES[ord(_b)] = _BASES[ord(_b.lower())] = _i


def finetune_splits(labels: Sequence[str], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) row indices [n_part] as `seqssm finetune --seed seed` takes them from a single-label
    sequence table with the default --split 0.8,0.1,0.1."""
    if any(";" in label for label in labels):
        raise InputError("multi-label tables (';' in a label) are not stratified by finetune; give a single-label one")
    return split_indices(len(labels), (0.8, 0.1, 0.1), seed, list(labels))


def one_hot(sequences: Sequence[str]) -> np.ndarray:
    """float32 [N, L * 4]: position-major one-hot of equal-length DNA strings (non-ACGT rows of zeros)."""
    lengths = {len(s) for s in sequences}
    if len(lengths) != 1:
        raise InputError(f"one-hot features need sequences of one length, got lengths {sorted(lengths)[:5]}")
    codes = _BASES[np.frombuffer("".join(sequences).encode("ascii"), dtype=np.uint8)].reshape(len(sequences), -1)
    out = np.zeros((*codes.shape, 4), dtype=np.float32)
    rows, cols = np.nonzero(codes >= 0)
    out[rows, cols, codes[rows, cols]] = 1
    return out.reshape(len(sequences), -1)


def seed_row(x: np.ndarray, y: np.ndarray, seed: int, grid: Sequence[float] = C_GRID) -> dict:
    """Test accuracy at each C of ``grid`` (fitted on train) and the val-selected one, for one seed's split."""
    train, val, test = finetune_splits(list(y), seed)
    row = {"seed": seed, "n_train": len(train), "n_test": len(test)}
    best_val = -math.inf
    for c in grid:
        model = LogisticRegression(C=c, max_iter=5000).fit(x[train], y[train])
        val_acc = float((model.predict(x[val]) == y[val]).mean())
        row[c] = float((model.predict(x[test]) == y[test]).mean())
        if val_acc > best_val:  # ties keep the smaller C (stronger regularisation)
            best_val, row["c_by_val"], row["by_val"] = val_acc, c, row[c]
    return row


def read_model_summaries(path: str | Path) -> dict[str, dict[int, float]]:
    """{model name: {seed: test accuracy}} from a tab-separated summary with ``seed``, ``test_acc`` and
    optionally ``model`` columns (without it, every row is model "model"); models in order of first
    appearance, empty accuracies (failed runs) left out."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model summary {path} does not exist; give the summary.txt of .carry/six2_gpu.sh")
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows = list(reader)
        columns = reader.fieldnames or []
    if not {"seed", "test_acc"} <= set(columns):
        raise InputError(f"{path}: needs 'seed' and 'test_acc' columns, has {sorted(columns)}")
    models: dict[str, dict[int, float]] = {}
    for line, r in enumerate(rows, start=2):
        name = r["model"].strip() if "model" in columns else "model"
        seeds = models.setdefault(name, {})
        if not r["test_acc"].strip():
            continue
        seed = int(r["seed"])
        if seed in seeds:
            raise InputError(f"{path}:{line}: a second test_acc for model {name!r} at seed {seed}; give each model "
                             "its own name in a 'model' column")
        seeds[seed] = float(r["test_acc"])
    return models


def read_model_summary(path: str | Path) -> dict[int, float]:
    """{seed: test accuracy} of a summary holding one model (see :func:`read_model_summaries`)."""
    models = read_model_summaries(path)
    if len(models) > 1:
        raise InputError(f"{path} holds {len(models)} models ({', '.join(models)}); read it with "
                         "read_model_summaries")
    return next(iter(models.values()), {})


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def paired(rows: Sequence[dict], accuracies: dict[int, float]) -> list[float]:
    """Per-seed model - "C by val" baseline differences, over the seeds of ``rows`` the model has."""
    return [accuracies[r["seed"]] - r["by_val"] for r in rows if r["seed"] in accuracies]


def paired_line(name: str, diffs: Sequence[float]) -> str:
    """Mean paired difference, its standard error and how many seeds are above, in one line."""
    if len(diffs) < 2:
        return f"paired difference {name} - LR (C by val): {len(diffs)} seed(s), too few for a standard error"
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    return (f"paired difference {name} - LR (C by val): {statistics.fmean(diffs):+.4f}, SE {se:.4f} over "
            f"{len(diffs)} seeds ({sum(d > 0 for d in diffs)} of {len(diffs)} above)")


def print_table(rows: Sequence[dict], name: str | None = None, accuracies: dict[int, float] | None = None) -> None:
    """The baseline per seed as a markdown table; with ``accuracies``, the model ``name``'s and the paired
    difference (then the paired line)."""
    head = ["seed", *(f"LR C={c:g}" for c in REPORTED_C), "LR C by val (C)"]
    if accuracies is not None:
        head += [name, f"{name} - LR by val"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for row in rows:
        cells = [str(row["seed"]), *(f"{row[c]:.4f}" for c in REPORTED_C), f"{row['by_val']:.4f} ({row['c_by_val']:g})"]
        if accuracies is not None:
            acc = accuracies.get(row["seed"])
            cells += ["-", "-"] if acc is None else [f"{acc:.4f}", f"{acc - row['by_val']:+.4f}"]
        print("| " + " | ".join(cells) + " |")
    summary = ["mean ± sd", *(_mean_sd([r[c] for r in rows]) for c in REPORTED_C),
               _mean_sd([r["by_val"] for r in rows])]
    if accuracies is not None:
        diffs = paired(rows, accuracies)
        summary += [_mean_sd([accuracies[r["seed"]] for r in rows if r["seed"] in accuracies]), _mean_sd(diffs)]
    print("| " + " | ".join(summary) + " |")
    if accuracies is not None:
        print(paired_line(name, diffs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(DEFAULT_TABLE), help="labelled table (sequence, label, id)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--models", help="summary TSV with seed, test_acc and optionally model columns "
                        "(six2_gpu.sh's, six3_gpu.sh's)")
    args = parser.parse_args()

    table = read_labelled_table(args.table)
    x, y = one_hot(table.sequences), np.asarray(table.labels)
    models = read_model_summaries(args.models) if args.models else {}
    rows = [seed_row(x, y, seed) for seed in args.seeds]

    counts = ", ".join(f"{c} {int((y == c).sum())}" for c in table.classes)
    print(f"{args.table}: {len(y)} sequences of {x.shape[1] // 4} nt ({counts}); "
          f"train / test {rows[0]['n_train']} / {rows[0]['n_test']}; one SE at 0.84 on the test split "
          f"{math.sqrt(0.84 * 0.16 / rows[0]['n_test']):.3f}")
    if not models:
        print_table(rows)
    for name, accuracies in models.items():
        if len(models) > 1:
            print(f"\n{name}:")
        print_table(rows, name, accuracies)
    if len(models) > 1:
        print("\nall models:")
        for name, accuracies in models.items():
            print(paired_line(name, paired(rows, accuracies)))


if __name__ == "__main__":
    main()
