"""`finetune --folds K`: the folds partition the train and val rows, are stratified and fixed by the seed,
the pooled scores are those of the written table, and `--baseline` is fitted on the very same folds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from seqssm.datasets.labelled import Example
from seqssm.errors import InputError
from seqssm.pipelines.finetune import FinetuneConfig, _load_data, finetune
from seqssm.pipelines.folds import fold_ids, fold_splits, paired, read_prediction_table, table_scores

TINY = {"d_model": 16, "n_layer": 1, "d_state": 4, "expand": 1, "device": "cpu", "impl": "chunked",
        "warmup_steps": 2}


def _table(path: Path, n: int = 45, seed: int = 0) -> Path:
    """Three classes told apart by the first 8 bases, unevenly many (2:1:... by index)."""
    rng = np.random.default_rng(seed)
    lines = ["sequence\tlabel\tid"]
    for i in range(n):
        label = "0" if i % 5 < 2 else ("1" if i % 5 < 4 else "2")
        seq = {"0": "A", "1": "C", "2": "G"}[label] * 8 + "".join(rng.choice(list("ACGT"), 8))
        lines.append(f"{seq}\t{label}\tr{i}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fold_ids_partition_stratify_and_follow_the_seed():
    labels = ["a"] * 30 + ["b"] * 20 + ["c"] * 10
    ids = fold_ids(labels, 5, seed=3)
    assert sorted(set(ids.tolist())) == [0, 1, 2, 3, 4] and len(ids) == 60
    for f in range(5):  # every fold holds 6 a, 4 b and 2 c: the label proportions
        assert Counter(np.asarray(labels)[ids == f].tolist()) == {"a": 6, "b": 4, "c": 2}
    assert np.array_equal(ids, fold_ids(labels, 5, seed=3))
    assert not np.array_equal(ids, fold_ids(labels, 5, seed=4))
    with pytest.raises(InputError, match="--folds"):
        fold_ids(labels[:3], 5, seed=0)


def test_fold_splits_are_disjoint_and_test_rows_cover_the_pool_once():
    pool = [Example(f"r{i}", "ACGT", str(i % 2)) for i in range(40)]
    ids = fold_ids([e.label for e in pool], 4, seed=0)
    folds = fold_splits(pool, ids, (0.8, 0.1, 0.1), seed=0)
    tested = [e.id for fold in folds for e in fold["test"]]
    assert sorted(tested) == sorted(e.id for e in pool)
    for f, fold in enumerate(folds):
        parts = [{e.id for e in fold[name]} for name in ("train", "val", "test")]
        assert sum(map(len, parts)) == 40 and len(set().union(*parts)) == 40
        assert parts[2] == {e.id for e, i in zip(pool, ids, strict=True) if i == f}
        assert len(parts[1]) == round(30 / 9)  # val : train as 0.1 : 0.8


def test_paired_difference_and_standard_error():
    model = [{"accuracy": a} for a in (0.8, 0.9, 0.7)]
    base = [{"accuracy": b} for b in (0.7, 0.7, 0.7)]
    d = paired(model, base, ("accuracy",))["accuracy"]
    diffs = np.array([0.1, 0.2, 0.0])
    assert d["mean_diff"] == pytest.approx(0.1) and d["folds"] == 3
    assert d["se"] == pytest.approx(diffs.std(ddof=1) / np.sqrt(3))


def test_finetune_folds_pools_predictions_and_pairs_the_baseline(tmp_path):
    data = _table(tmp_path / "d.tsv")
    cfg = FinetuneConfig(data=str(data), out=str(tmp_path / "cv"), folds=3, epochs=1, batch_size=16,
                         split=(0.8, 0.2, 0.0), baseline=True, **TINY)
    result = finetune(cfg)
    out = tmp_path / "cv"
    _, splits, _ = _load_data(cfg)
    pool_ids = sorted(e.id for e in splits["train"] + splits["val"])
    header, rows = read_prediction_table(out / "oof_predictions.tsv")
    assert header[-1] == "fold" and sorted(r[0] for r in rows) == pool_ids == sorted(f"r{i}" for i in range(45))
    record = json.loads((out / "run.json").read_text())["cross_validation"]
    assert {r[0]: int(r[-1]) for r in rows} == record["fold_ids"]
    # The pooled scores are those recomputed from the table written.
    recomputed = table_scores(header[:-1], [r[:-1] for r in rows])
    assert recomputed == pytest.approx(result.test_metrics) and record["pooled"] == pytest.approx(recomputed)
    assert len(record["per_fold"]) == 3 and all((out / f"fold_{f}" / "checkpoint").is_dir() for f in range(3))
    # The baseline is scored on exactly the same rows in the same folds.
    b_header, b_rows = read_prediction_table(out / "baseline_oof_predictions.tsv")
    assert [(r[0], r[-1]) for r in b_rows] == [(r[0], r[-1]) for r in rows]
    base = record["baseline"]
    acc = [m["accuracy"] - b["accuracy"] for m, b in zip(record["per_fold"], base["per_fold"], strict=True)]
    assert base["paired"]["accuracy"]["mean_diff"] == pytest.approx(np.mean(acc))
    fold_run = json.loads((out / "fold_1" / "run.json").read_text())
    assert fold_run["fold"] == {"index": 1, "of": 3}


def test_folds_refuse_resume(tmp_path):
    with pytest.raises(InputError, match="--folds"):
        FinetuneConfig(data="x.tsv", out=str(tmp_path / "o"), folds=3, resume=True)
