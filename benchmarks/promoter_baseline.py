"""One-hot logistic-regression baseline on the seeded splits `seqssm finetune --seed S` makes; prints a table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/promoter_baseline.py [--table PATH] [--seeds 0 1 2 3 4]
        [--models SUMMARY.tsv]

The table (default ``../shared/data/labelled/ecoli_promoters.tsv``) is read and split exactly as
``pipelines.finetune`` does (``read_labelled_table``, then ``split_indices`` 0.8 / 0.1 / 0.1 by ``seed``,
stratified by label); ``tests/test_promoter_baseline.py`` checks that against finetune's own loader. Each
sequence becomes a one-hot [L * 4] vector (A, C, G, T; any other base all zeros), and scikit-learn's
``LogisticRegression`` is fitted on the train split at each ``C`` and scored on the test split. "C by val"
refits nothing: it is the test accuracy of the grid's ``C`` with the best validation accuracy, the same
selection the fine-tuned model's kept checkpoint gets.

``--models`` reads a tab-separated summary with ``seed`` and ``test_acc`` columns (``.carry/six2_gpu.sh``
writes one) and adds the model's test accuracy per seed and its paired difference to the "C by val"
baseline: the same test sequences per seed, so split-to-split variation cancels in the difference.
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

from seqssm.datasets.tables import read_labelled_table, split_indices
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


def read_model_summary(path: str | Path) -> dict[int, float]:
    """{seed: test accuracy} from a tab-separated summary with ``seed`` and ``test_acc`` columns (empty
    accuracies, i.e. failed runs, left out)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model summary {path} does not exist; give the summary.txt of .carry/six2_gpu.sh")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and not {"seed", "test_acc"} <= set(rows[0]):
        raise InputError(f"{path}: needs 'seed' and 'test_acc' columns, has {sorted(rows[0])}")
    return {int(r["seed"]): float(r["test_acc"]) for r in rows if r["test_acc"].strip()}


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(DEFAULT_TABLE), help="labelled table (sequence, label, id)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--models", help="summary TSV with seed and test_acc columns (e.g. six2_gpu.sh's)")
    args = parser.parse_args()

    table = read_labelled_table(args.table)
    x, y = one_hot(table.sequences), np.asarray(table.labels)
    models = read_model_summary(args.models) if args.models else {}
    rows = [seed_row(x, y, seed) for seed in args.seeds]

    counts = ", ".join(f"{c} {int((y == c).sum())}" for c in table.classes)
    print(f"{args.table}: {len(y)} sequences of {x.shape[1] // 4} nt ({counts}); "
          f"train / test {rows[0]['n_train']} / {rows[0]['n_test']}; one SE at 0.84 on the test split "
          f"{math.sqrt(0.84 * 0.16 / rows[0]['n_test']):.3f}")
    head = ["seed", *(f"LR C={c:g}" for c in REPORTED_C), "LR C by val (C)"]
    if models:
        head += ["model", "model - LR by val"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    diffs = []
    for row in rows:
        cells = [str(row["seed"]), *(f"{row[c]:.4f}" for c in REPORTED_C), f"{row['by_val']:.4f} ({row['c_by_val']:g})"]
        if models:
            acc = models.get(row["seed"])
            if acc is not None:
                diffs.append(acc - row["by_val"])
            cells += ["-", "-"] if acc is None else [f"{acc:.4f}", f"{acc - row['by_val']:+.4f}"]
        print("| " + " | ".join(cells) + " |")
    summary = ["mean ± sd", *(_mean_sd([r[c] for r in rows]) for c in REPORTED_C),
               _mean_sd([r["by_val"] for r in rows])]
    if models:
        summary += [_mean_sd([models[r["seed"]] for r in rows if r["seed"] in models]), _mean_sd(diffs)]
    print("| " + " | ".join(summary) + " |")
    if len(diffs) > 1:
        se = statistics.stdev(diffs) / math.sqrt(len(diffs))
        print(f"paired difference model - LR (C by val): {statistics.fmean(diffs):+.4f}, SE {se:.4f} over "
              f"{len(diffs)} seeds ({sum(d > 0 for d in diffs)} of {len(diffs)} above)")


if __name__ == "__main__":
    main()
